"""What a call cost: list prices in USD per 1M input / output tokens.

A model is priced by the longest table entry its name starts with, so dated variants
(`gpt-4o-2024-08-06`, `claude-3-5-haiku-20241022`) find their family; a provider prefix
(`openai/gpt-4o`) is ignored. A model not in the table — a local vLLM/Ollama/llama.cpp
model, or one newer than this table — costs 0, and a warning says so once per model.
Prompt-cache discounts are not modelled. Prices as published by OpenAI and Anthropic, 2025.
"""

import logging

from nexus.agent_runner.llm.base import Usage

log = logging.getLogger(__name__)

# model prefix -> (USD per 1M input tokens, USD per 1M output tokens)
PRICES: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-5": (1.25, 10.00),
    "gpt-5.1": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o1": (15.00, 60.00),
    "o1-mini": (1.10, 4.40),
    "o1-pro": (150.00, 600.00),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o3-pro": (20.00, 80.00),
    "o4-mini": (1.10, 4.40),
    # Anthropic
    "claude-opus-4-5": (5.00, 25.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-opus": (15.00, 75.00),
    "claude-3-haiku": (0.25, 1.25),
    # The offline provider.
    "scripted": (0.0, 0.0),
}

_warned: set[str] = set()


def price_of(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens, or None when the model is not in the table."""
    name = model.rsplit("/", 1)[-1].lower()
    best = max(
        (p for p in PRICES if name == p or name.startswith(p + "-") or name.startswith(p + ":")), key=len, default=None
    )
    return PRICES[best] if best is not None else None


def cost_usd(model: str, usage: Usage) -> float:
    price = price_of(model)
    if price is None:
        if model not in _warned:
            _warned.add(model)
            log.warning("no price known for model %r: its calls are counted as costing 0 USD", model)
        return 0.0
    per_input, per_output = price
    return (usage.input_tokens * per_input + usage.output_tokens * per_output) / 1_000_000

"""What a call cost: list prices in USD per 1M input / output tokens.

A model is priced by the longest table entry its name starts with, so dated variants
(`gpt-4o-2024-08-06`, `claude-3-5-haiku-20241022`) find their family; a provider prefix
(`openai/gpt-4o`) is ignored. A model not in the table — a local vLLM/Ollama/llama.cpp
model, or one newer than this table — costs 0, and a warning says so once per model.
Prompt-cache discounts are not modelled. Prices as published by OpenAI and Anthropic, 2025.
"""

import logging

from nexus.agent_runner.llm.base import Usage
from nexus.domain.pricing import DEFAULT_PRICES, price_in

log = logging.getLogger(__name__)

PRICES = DEFAULT_PRICES

_warned: set[str] = set()


def price_of(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens, or None when the model is not in the table."""
    return price_in(PRICES, model)


def cost_usd(model: str, usage: Usage) -> float:
    price = price_of(model)
    if price is None:
        if model not in _warned:
            _warned.add(model)
            log.warning("no price known for model %r: its calls are counted as costing 0 USD", model)
        return 0.0
    per_input, per_output = price
    return (usage.input_tokens * per_input + usage.output_tokens * per_output) / 1_000_000

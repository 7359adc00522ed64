"""Model prices: list prices in USD per 1M input / output tokens, looked up by model name.

This table only seeds the price list core-api keeps as data (admins change it through the API);
each run is handed the price of its model. A model is priced by the longest entry its name starts
with, so dated variants (`gpt-4o-2024-08-06`) find their family; a provider prefix
(`openai/gpt-4o`) is ignored. Prompt-cache discounts are not modelled. Published prices, 2025.
"""

# model prefix -> (USD per 1M input tokens, USD per 1M output tokens)
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
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


def price_in(table: dict[str, tuple[float, float]], model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens of `model` in `table`, or None when it has no entry."""
    name = model.rsplit("/", 1)[-1].lower()
    best = max(
        (p for p in table if name == p or name.startswith(p + "-") or name.startswith(p + ":")), key=len, default=None
    )
    return table[best] if best is not None else None

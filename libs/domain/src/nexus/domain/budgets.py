"""Budgets: caps in USD and tokens, what is left of them, how a goal's is split among its children,
and the check a runner makes before each model call."""

import math
from typing import TypeVar

import msgspec

WARNING_FRACTION = 0.8
BUDGET_EXCEEDED = "budget_exceeded"


class Spend(msgspec.Struct, frozen=True, kw_only=True):
    usd: float = 0.0
    tokens: int = 0

    def __add__(self, other: "Spend") -> "Spend":
        return Spend(usd=self.usd + other.usd, tokens=self.tokens + other.tokens)


class Cap(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """None: no cap on that measure."""

    usd: float | None = None
    tokens: int | None = None

    @property
    def empty(self) -> bool:
        return self.usd is None and self.tokens is None

    def left(self, spent: Spend) -> "Cap":
        return Cap(
            usd=None if self.usd is None else max(0.0, self.usd - spent.usd),
            tokens=None if self.tokens is None else max(0, self.tokens - spent.tokens),
        )

    def exhausted(self, spent: Spend) -> bool:
        return (self.usd is not None and spent.usd >= self.usd) or (
            self.tokens is not None and spent.tokens >= self.tokens
        )

    def reached_fraction(self, spent: Spend) -> float:
        """The largest share used of either measure (0 when uncapped)."""
        shares = [
            spent.usd / self.usd if self.usd else (1.0 if self.usd == 0 else 0.0),
            spent.tokens / self.tokens if self.tokens else (1.0 if self.tokens == 0 else 0.0),
        ]
        return max(shares)

    def tightest(self, other: "Cap") -> "Cap":
        return Cap(usd=_min(self.usd, other.usd), tokens=_min(self.tokens, other.tokens))


_N = TypeVar("_N", int, float)


def _min(a: _N | None, b: _N | None) -> _N | None:
    return b if a is None else a if b is None else min(a, b)


def split(total: Cap, weights: list[float]) -> list[Cap]:
    """A goal's budget among its children: even by default, by weight when the plan gives them.
    Token shares are rounded down so the shares never add up to more than the total."""
    if not weights:
        return []
    ws = [w if w > 0 else 0.0 for w in weights]
    whole = sum(ws) or float(len(ws))
    ws = ws if sum(ws) else [1.0] * len(ws)
    return [
        Cap(
            usd=None if total.usd is None else total.usd * w / whole,
            tokens=None if total.tokens is None else math.floor(total.tokens * w / whole),
        )
        for w in ws
    ]


def would_exceed(cap: Cap, spent: Spend, estimate: Spend) -> bool:
    """The runner's check before a model call: what was spent plus what the call may cost."""
    after = spent + estimate
    return (cap.usd is not None and after.usd > cap.usd) or (cap.tokens is not None and after.tokens > cap.tokens)


def call_cost(price: tuple[float, float] | None, input_tokens: int, output_tokens: int) -> float:
    """USD of a call at (input, output) USD per 1M tokens; an unpriced model costs nothing."""
    if price is None:
        return 0.0
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000

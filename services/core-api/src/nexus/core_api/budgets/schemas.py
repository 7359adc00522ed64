from typing import Annotated

import msgspec

from nexus.core_api.schemas import Body, Out

Usd = Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]
Tokens = Annotated[int, msgspec.Meta(ge=0, le=10_000_000_000)]


class BudgetIn(Body):
    """A cap in USD and/or tokens; a field left out (or null) is uncapped."""

    usd: Usd | None = None
    tokens: Tokens | None = None


class BudgetOut(Out):
    usd: float | None = None
    tokens: int | None = None
    spent_usd: float = 0.0
    spent_tokens: int = 0
    left_usd: float | None = None
    left_tokens: int | None = None


class AgentBudgetOut(Out):
    agent_id: str
    budget: BudgetOut
    period: str = "day"  # UTC day
    released_tasks: list[str] = msgspec.field(default_factory=list)  # tasks a raise let run

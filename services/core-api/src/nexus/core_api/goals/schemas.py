from typing import Annotated, Any

import msgspec

from nexus.core_api.budgets.schemas import BudgetIn, BudgetOut
from nexus.core_api.schemas import Body, Out, ShortText, Text

Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]


class GoalCreate(Body):
    title: ShortText
    description: Text = ""
    # With a meta agent, the goal starts a meta session that plans its tasks.
    meta_agent: Ref | None = None  # agent id or name
    repository: Ref | None = None  # repository id or name
    budget: BudgetIn | None = None  # the goal's cap in USD and/or tokens, split among the children it plans


class GoalOut(Out):
    """A goal as lists show it."""

    id: str
    title: str
    description: str
    status: str
    meta_agent_id: str | None
    repository_id: str | None
    meta_run_id: str | None
    created_by: str
    created_at: str
    updated_at: str


class Usage(Out):
    cost_usd: float = 0.0
    tokens: int = 0


class Progress(Out):
    total: int = 0  # child tasks (the meta task is not counted)
    by_status: dict[str, int] = msgspec.field(default_factory=dict)


class MetaSession(Out):
    task_id: str
    task_status: str
    run_id: str | None
    run_status: str | None
    session_id: str | None
    agent_id: str | None
    cost_usd: float = 0.0
    tokens: int = 0


class GoalChild(Out):
    task_id: str
    title: str
    status: str  # the task's status
    blocked: str  # "budget: …" while a spent budget holds it back
    agent_id: str | None
    run_id: str | None
    run_status: str | None
    session_id: str | None
    reason: str
    branch: str
    commit_sha: str
    budget: dict[str, Any]  # its share of the goal's budget: {"usd"?, "tokens"?}; {} = none
    weight: float
    cost_usd: float = 0.0
    tokens: int = 0


class GoalDetail(GoalOut):
    """One goal: where it is, what it cost, what is left, its meta session and its children."""

    status_reason: str = ""
    ended_at: str | None = None
    progress: Progress = msgspec.field(default_factory=Progress)
    usage: Usage = msgspec.field(default_factory=Usage)
    budget: BudgetOut | None = None  # None: no goal budget
    meta: MetaSession | None = None
    children: list[GoalChild] = msgspec.field(default_factory=list)
    report: dict[str, Any] | None = None  # set once the goal ended (done, failed or cancelled)

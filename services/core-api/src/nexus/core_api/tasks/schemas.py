from typing import Annotated, Literal

import msgspec

from nexus.core_api.schemas import Body, Out, ShortText, Text

Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
# Each blocker is read and marked one by one: 1,500 of them took ~12 s (a 1 MiB body, minutes).
Blockers = Annotated[list[Ref], msgspec.Meta(max_length=100, description="tasks this one waits for, at most 100")]


class TaskCreate(Body):
    title: ShortText
    description: Text = ""
    goal_id: Ref | None = None
    assignee: Ref | None = None  # agent id or name
    repository: Ref | None = None  # repository id or name
    priority: Annotated[int, msgspec.Meta(ge=-100, le=100)] = 0
    blocked_by: Blockers = msgspec.field(default_factory=list)
    # "ready" dispatches as soon as the blockers are done; "backlog" waits for a human.
    status: Literal["backlog", "ready"] = "ready"


class TaskUpdate(Body):
    title: ShortText | None = None
    description: Text | None = None
    assignee: Ref | None = None
    repository: Ref | None = None
    priority: Annotated[int, msgspec.Meta(ge=-100, le=100)] | None = None
    blocked_by: Blockers | None = None


class TaskMove(Body):
    status: Literal["backlog", "ready", "in_review", "done", "cancelled"]


class TaskOut(Out):
    id: str
    title: str
    description: str
    goal_id: str | None
    status: str
    assignee_agent_id: str | None
    repository_id: str | None
    priority: int
    blocked_by: list[str]
    current_run_id: str | None
    parent_session_id: str | None
    session_id: str | None
    target_files: list[str]
    created_at: str
    updated_at: str
    blocked: str = ""  # "budget: …" while a spent budget keeps this ready task from running

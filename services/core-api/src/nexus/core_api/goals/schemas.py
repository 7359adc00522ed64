from typing import Annotated

import msgspec

from nexus.core_api.schemas import Body, Out, ShortText, Text

Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]


class GoalCreate(Body):
    title: ShortText
    description: Text = ""
    # With a meta agent, the goal starts a meta session that plans its tasks.
    meta_agent: Ref | None = None  # agent id or name
    repository: Ref | None = None  # repository id or name


class GoalOut(Out):
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

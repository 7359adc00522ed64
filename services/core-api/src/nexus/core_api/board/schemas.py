from typing import Annotated, Literal

import msgspec

from nexus.core_api.schemas import Body, Out, SecretName

Url = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$", max_length=500, description="http(s) URL")]
Ident = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
Column = Literal["backlog", "ready", "running", "waiting_approval", "in_review", "done", "failed_cancelled"]


class RunBrief(Out):
    id: str
    status: str


class CardOut(Out):
    task_id: str
    title: str
    status: str
    column: str
    rank: float
    goal_id: str | None
    repository_id: str | None
    assignee_agent_id: str | None
    run: RunBrief | None
    approvals_waiting: int
    cost_usd: float


class ColumnOut(Out):
    id: str
    title: str
    cards: list[CardOut]
    more: bool = False  # a final column shows its newest cards; older ones exist (GET /v1/tasks?status=…)


class BoardOut(Out):
    columns: list[ColumnOut]


class CardMove(Body):
    column: Column | None = None  # a different column: the task moves on its state machine
    direction: Literal["up", "down", "top", "bottom"] | None = None  # within the column


class PlaneSettings(Body):
    base_url: Url
    workspace_slug: Ident
    project_id: Ident
    api_key_secret: SecretName  # a secret reference, never the key itself
    webhook_secret: SecretName | None = None
    rate_limit_per_minute: Annotated[int, msgspec.Meta(ge=1, le=6000)] = 60


class JiraSettings(Body):
    base_url: Url
    project_key: Annotated[str, msgspec.Meta(pattern=r"^[A-Z][A-Z0-9_]{0,19}$")]
    email: Annotated[str, msgspec.Meta(pattern=r"^[^@\s]+@[^@\s]+$", max_length=200)]
    api_token_secret: SecretName
    webhook_secret: SecretName | None = None
    rate_limit_per_minute: Annotated[int, msgspec.Meta(ge=1, le=6000)] = 100
    status_names: dict[str, str] = msgspec.field(default_factory=dict)  # state group -> the workflow's status name


class BoardProviderIn(Body):
    provider: Literal["internal", "plane", "jira"]
    plane: PlaneSettings | None = None
    jira: JiraSettings | None = None


class BoardProviderOut(Out):
    scope: str  # "default" or a repository id
    provider: str
    plane: PlaneSettings | None
    jira: JiraSettings | None
    updated_by: str
    updated_at: str

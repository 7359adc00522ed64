"""One msgspec Struct per message. The catalog (catalog.py) pairs each with its subject."""

from typing import Literal

import msgspec

from nexus.domain.agents import LLMSpec, Limits, Permissions
from nexus.domain.sessions import SessionChange


class Payload(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


# ---------------------------------------------------------------- the run config
class RepoSpec(Payload):
    url: str
    ref: str = "main"  # what to clone
    branch: str = ""  # the run's working branch, nexus/<task>/<run>
    target_branch: str = "main"  # where a merge would go
    credentials_secret: str | None = None


class TaskBrief(Payload):
    title: str
    description: str = ""
    goal_id: str | None = None
    target_files: list[str] = msgspec.field(default_factory=list)


class RunConfig(Payload):
    run_id: str
    agent_id: str
    task_id: str
    system_prompt: str
    skills: list[str] = msgspec.field(default_factory=list)
    memory: list[str] = msgspec.field(default_factory=list)
    tools: list[str] = msgspec.field(default_factory=list)
    permissions: Permissions = msgspec.field(default_factory=Permissions)
    agent_revision: int = 1
    session_id: str = ""
    parent_session_id: str | None = None
    meta: bool = False
    task: TaskBrief | None = None
    repo: RepoSpec | None = None
    llm: LLMSpec = msgspec.field(default_factory=LLMSpec)
    limits: Limits = msgspec.field(default_factory=Limits)
    secrets: list[str] = msgspec.field(default_factory=list)  # names only; values never travel here
    # How long a paused run waits for a human's decision (core-api's `approval_ttl_s`); unset: the runner's own default.
    approval_ttl_s: float | None = None


# ---------------------------------------------------------------- commands
class LaunchRun(Payload):
    run_id: str
    attempt: int
    config: RunConfig
    priority: int = 0


class CancelRun(Payload):
    run_id: str
    reason: str = "cancelled"


class CreateGoal(Payload):
    title: str
    description: str = ""
    requested_by: str = ""


class DecideApproval(Payload):
    approval_id: str
    decision: Literal["approved", "rejected"]
    reason: str = ""
    decided_by: str = ""


class ChildPlan(Payload):
    session_id: str
    title: str
    description: str = ""
    target_files: list[str] = msgspec.field(default_factory=list)
    agent_id: str | None = None


class PlanChildren(Payload):
    run_id: str
    session_id: str
    children: list[ChildPlan]


# ---------------------------------------------------------------- run events (NEXUS_RUNS)
RunPhase = Literal["running", "waiting_approval", "succeeded", "failed", "cancelled", "timed_out"]


class Usage(Payload):
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class RunStatusChanged(Payload):
    status: RunPhase
    attempt: int = 1
    reason: str = ""
    summary: str = ""
    branch: str = ""
    commit_sha: str = ""
    ledger_hash: str = ""
    usage: Usage | None = None


class RunLog(Payload):
    message: str
    level: Literal["debug", "info", "warning", "error"] = "info"


class LLMCalled(Payload):
    step: int
    provider: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    stop_reason: str = ""
    tool_calls: list[str] = msgspec.field(default_factory=list)
    text: str = ""


class ToolCalled(Payload):
    step: int
    tool: str
    ok: bool
    error: str = ""


class SessionChanged(Payload):
    """One hypervisor-recorded change, streamed as `nexus.run.<id>.<change kind>`."""

    session_id: str
    change: SessionChange
    parent_session_id: str | None = None


class SessionOpened(Payload):
    session_id: str
    project_path: str
    parent_session_id: str | None = None
    backend: str = "scripted"
    status: Literal["active", "completed", "error"] = "active"


class Heartbeat(Payload):
    attempt: int = 1
    step: int = 0
    pid: int | None = None


class RuntimeChanged(Payload):
    """The worker's view of the execution: launched, exited, lost, launch_failed."""

    phase: Literal["launched", "exited", "lost", "launch_failed"]
    attempt: int
    runtime: str
    detail: str = ""
    exit_code: int | None = None


class ApprovalRequested(Payload):
    approval_id: str
    run_id: str
    action: str
    detail: str = ""
    session_id: str = ""
    expires_at: str = ""


class ChildFinished(Payload):
    """core-api tells a meta session that one of its children ended."""

    session_id: str
    run_id: str
    task_id: str
    status: str
    summary: str = ""
    reason: str = ""


# ---------------------------------------------------------------- domain events (NEXUS_EVENTS)
class TaskChanged(Payload):
    task_id: str
    status: str
    title: str = ""
    goal_id: str | None = None
    assignee_agent_id: str | None = None


class RunChanged(Payload):
    run_id: str
    task_id: str
    agent_id: str
    status: str
    attempt: int = 1
    reason: str = ""


class GoalChanged(Payload):
    goal_id: str
    title: str
    status: str


class ApprovalDecided(Payload):
    approval_id: str
    run_id: str
    decision: Literal["approved", "rejected", "expired"]
    reason: str = ""
    decided_by: str = ""


class DeadLetter(Payload):
    """What the consumer could not handle, with why; the original body is kept verbatim."""

    original_subject: str
    reason: str
    consumer: str
    body: str
    deliveries: int = 1


class FireSchedule(Payload):
    """The worker's clock says an occurrence of a schedule is due. `occurrence_id` is deterministic
    (schedule id + occurrence time) and doubles as the Nats-Msg-Id, so firing twice changes nothing."""

    schedule_id: str
    occurrence_at: str  # ISO 8601, UTC
    occurrence_id: str
    late: bool = False  # a missed occurrence fired by catch-up


# ---------------------------------------------------------------- the board
class BoardCardMoved(Payload):
    """A card changed column or rank on the internal board (what the board's SSE feed carries)."""

    task_id: str
    column: str
    rank: float | None = None  # set when a person placed the card
    goal_id: str | None = None
    repository_id: str | None = None
    previous_column: str | None = None


class BoardExternalChanged(Payload):
    """A verified webhook delivery from an external board, forwarded by core-api to board-sync."""

    provider: Literal["plane", "jira"]
    delivery_id: str
    event: str  # plane: issue | issue_comment | …; jira: jira:issue_updated | comment_created | …
    action: str = ""
    item_id: str = ""
    actor: str = ""
    comment: str = ""  # a comment's text, when the delivery is one
    body: str = ""  # the delivery as received (JSON text)


class CancelTask(Payload):
    """board-sync asks core-api to cancel a task because its card was cancelled on an external board."""

    task_id: str
    provider: str
    actor: str = ""
    reason: str = ""

"""One msgspec Struct per message. The catalog (catalog.py) pairs each with its subject."""

from typing import Annotated, Literal

import msgspec

from nexus.domain.agents import LLMSpec, Limits, Permissions
from nexus.domain.budgets import Cap
from nexus.domain.limits import MAX_BODY_BYTES, Ref, ShortText, Text, Who
from nexus.domain.sessions import SessionChange


# A message larger than this is refused by every consumer (dead-lettered), like an HTTP body.
MAX_MESSAGE_BYTES = MAX_BODY_BYTES


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
    # The most this run may spend (the tightest of its agent's limits, what is left of its goal's or
    # its share of it, and of its agent's day); checked by the runner before each model call.
    budget: Cap | None = None
    # Its model's price, USD per 1M (input, output) tokens, from core-api's price list.
    price: tuple[float, float] | None = None


# ---------------------------------------------------------------- commands
class LaunchRun(Payload):
    attempt: int
    config: RunConfig
    priority: int = 0

    @property
    def run_id(self) -> str:
        """The run's id travels once, in its config."""
        return self.config.run_id


class CancelRun(Payload):
    run_id: Ref
    reason: Text = "cancelled"


class ChatPrincipal(Payload):
    """Who acts from a chat: core-api honours it only while a binding of this chat user to a Nexus
    identity exists with a role that allows the act."""

    user_id: str
    provider: Literal["telegram"] = "telegram"
    username: str = ""


class CreateGoal(Payload):
    title: ShortText
    description: Text = ""
    requested_by: Who = ""
    goal_id: Annotated[str, msgspec.Meta(max_length=120)] = ""
    meta_agent: Annotated[str, msgspec.Meta(max_length=120)] = (
        ""  # the planner agent (id or name) whose meta session plans the goal
    )
    repository: Annotated[str, msgspec.Meta(max_length=120)] = ""  # id or name
    principal: ChatPrincipal | None = None


class DecideApproval(Payload):
    approval_id: Ref
    decision: Literal["approved", "rejected"]
    reason: Text = ""
    decided_by: Who = ""
    principal: ChatPrincipal | None = None


class CancelRunRequest(Payload):
    """A chat asks core-api to cancel a run (core-api checks the principal, then commands the worker)."""

    run_id: Ref
    reason: Text = "cancelled from chat"
    principal: ChatPrincipal | None = None


MAX_TARGET_CHARS = 1000  # a child's target file path


class ChildPlan(Payload):
    session_id: Ref
    title: ShortText
    description: Text = ""
    target_files: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=MAX_TARGET_CHARS)]], msgspec.Meta(max_length=1000)
    ] = msgspec.field(default_factory=list)
    agent_id: Ref | None = None
    # The child's share of the goal's budget, relative to its siblings' (even when all are equal).
    weight: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 1.0


MAX_CHILDREN = 200  # children one meta session may plan


class PlanChildren(Payload):
    run_id: Ref
    session_id: Ref
    children: Annotated[list[ChildPlan], msgspec.Meta(max_length=MAX_CHILDREN)]


# ---------------------------------------------------------------- run events (NEXUS_RUNS)
RunPhase = Literal["running", "waiting_approval", "succeeded", "failed", "cancelled", "timed_out"]


class Usage(Payload):
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class SessionOpened(Payload):
    session_id: str
    project_path: str
    parent_session_id: str | None = None
    backend: str = "scripted"
    status: Literal["active", "completed", "error"] = "active"
    attempt: int = 1
    # How the session's commands are confined: "bwrap", "landlock" or "none" ("" from a runner that
    # does not say).
    sandbox: str = ""


class RunStatusChanged(Payload):
    status: RunPhase
    attempt: int = 1
    reason: str = ""
    summary: str = ""
    branch: str = ""
    commit_sha: str = ""
    ledger_hash: str = ""
    usage: Usage | None = None
    # A final status from the runner carries the end of the session its attempt ran (the report
    # `run.session` would have sent just before it): one event where there were two, ingested as both.
    session: SessionOpened | None = None


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
    attempt: int = 1  # each attempt records its own chain, seq from 0


class FileDiff(Payload):
    """What a recorded file write changed, for people: a unified diff, secrets masked, then capped
    (`nexus.run.<id>.file_diff`, beside the `file_write` change of the same session, attempt and seq)."""

    session_id: str
    seq: int  # the file-write change's seq in its session's ledger
    rel_path: str
    attempt: int = 1
    diff: str = ""  # "" with `binary` or `too_large`: no text diff was made
    truncated: bool = False  # the diff was longer than the cap and ends early
    binary: bool = False
    too_large: bool = False  # a side was larger than the hypervisor diffs


class CommandOutput(Payload):
    """What a recorded command printed (stdout and stderr as one stream, in order), secrets masked,
    then its tail kept (`nexus.run.<id>.command_output`, beside the `command_run` change of the same seq)."""

    session_id: str
    seq: int  # the command-run change's seq in its session's ledger
    cmd: str
    exit_code: int
    attempt: int = 1
    output: str = ""  # the last bytes the model saw, at most the cap
    truncated: bool = False  # the output shown is not all the command printed
    total_bytes: int = 0  # what the command printed in all


class Heartbeat(Payload):
    attempt: int = 1
    step: int = 0
    pid: int | None = None
    mailbox_depth: int = 0  # the deepest mailbox of the run's agent kernel now
    mailbox_dropped: int = 0  # messages the run's agent kernel has dropped so far


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
    summary: str = ""
    meta_run_id: str = ""
    previous: str = ""  # the status it moved from (goal.status_changed)
    reason: str = ""  # why: the rule that moved it ("every child task done", "cancelled by …")


class ChildReport(Payload):
    task_id: str
    title: str
    status: str
    run_id: str = ""
    session_id: str = ""
    agent_id: str = ""
    summary: str = ""
    reason: str = ""
    branch: str = ""
    commit_sha: str = ""
    ledger_hash: str = ""
    cost_usd: float = 0.0
    tokens: int = 0


class ApprovalReport(Payload):
    approval_id: str
    run_id: str
    action: str
    status: str
    decided_by: str = ""


class GoalReport(Payload):
    """What a goal's work came to, stored on the goal and emitted when it ends."""

    goal_id: str
    title: str
    status: str
    reason: str = ""
    meta: ChildReport | None = None  # the planning session
    children: list[ChildReport] = msgspec.field(default_factory=list)
    approvals: list[ApprovalReport] = msgspec.field(default_factory=list)
    cost_usd: float = 0.0
    tokens: int = 0
    started_at: str = ""
    ended_at: str = ""
    duration_s: float = 0.0


class BudgetAlert(Payload):
    """A budget reached 80% (budget.warning) or was spent (budget.exceeded). `scope`: goal, agent
    (per UTC day) or run; `scope_id`: the goal, agent or run id."""

    scope: Literal["goal", "agent", "run"]
    scope_id: str
    spent_usd: float = 0.0
    spent_tokens: int = 0
    cap_usd: float | None = None
    cap_tokens: int | None = None
    goal_id: str | None = None
    agent_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    detail: str = ""


class ApprovalDecided(Payload):
    approval_id: str
    run_id: str
    decision: Literal["approved", "rejected", "expired"]
    reason: str = ""
    decided_by: str = ""


class DeadLetter(Payload):
    """What the consumer could not handle, with why; the original body is kept verbatim up to a size
    that always fits, and beyond it cut (with the original's size and sha256)."""

    original_subject: str
    reason: str
    consumer: str
    body: str  # the original message, cut to a size that always fits when `truncated`
    deliveries: int = 1
    body_bytes: int = 0  # the original's size and hash, whole even when the body was cut
    body_sha256: str = ""
    truncated: bool = False


class FireSchedule(Payload):
    """The worker's clock says an occurrence of a schedule is due. `occurrence_id` is deterministic
    (schedule id + occurrence time) and doubles as the Nats-Msg-Id, so firing twice changes nothing."""

    schedule_id: Ref
    occurrence_at: Annotated[str, msgspec.Meta(max_length=64)]  # ISO 8601, UTC
    occurrence_id: Ref
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


class FollowGoal(Payload):
    """core-api asks itself to derive a goal's status again: one of its tasks moved."""

    goal_id: Ref
    task_id: Ref = ""  # the task that moved (for the log)


class CancelTask(Payload):
    """board-sync asks core-api to cancel a task because its card was cancelled on an external board."""

    task_id: str
    provider: str
    actor: str = ""
    reason: str = ""

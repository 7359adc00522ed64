"""Beanie documents, one per collection; a collection is named like its domain word.

Only MongoDB features FerretDB v1 supports are used: single-document atomic updates,
unique indexes, no transactions, no change streams, no $lookup."""

from datetime import UTC, datetime
from typing import Any

import pymongo
from beanie import Document
from pydantic import Field

from nexus.db.paging import PagedDocument


def now() -> datetime:
    return datetime.now(UTC)


class Agent(Document):
    id: str
    name: str
    revision: int = 1
    spec: dict[str, Any]  # the agent document as admins wrote it (prompt, skills, tools, permissions…)
    deleted: bool = False
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)

    class Settings:
        name = "agents"
        indexes = [pymongo.IndexModel([("name", 1)], unique=True)]


class AgentRevision(Document):
    id: str  # "<agent_id>@<revision>"
    agent_id: str
    revision: int
    spec: dict[str, Any]
    created_at: datetime = Field(default_factory=now)
    created_by: str = ""

    class Settings:
        name = "agent_revisions"
        indexes = [pymongo.IndexModel([("agent_id", 1), ("revision", -1)], unique=True)]


class Skill(Document):
    id: str
    name: str
    version: int = 1
    description: str = ""
    content: str
    deleted: bool = False
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)

    class Settings:
        name = "skills"
        indexes = [pymongo.IndexModel([("name", 1)], unique=True)]


class SkillRevision(Document):
    id: str  # "<skill_id>@<version>"
    skill_id: str
    name: str
    version: int
    description: str = ""
    content: str
    created_at: datetime = Field(default_factory=now)

    class Settings:
        name = "skill_revisions"
        indexes = [pymongo.IndexModel([("name", 1), ("version", -1)], unique=True)]


class Repository(Document):
    id: str
    name: str
    url: str
    default_branch: str = "main"
    credentials_secret: str | None = None
    deleted: bool = False
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)

    class Settings:
        name = "repositories"
        indexes = [pymongo.IndexModel([("name", 1)], unique=True)]


class MemoryItem(Document):
    id: str
    scope: str  # agent | repo | global
    scope_id: str | None = None
    content: str
    tags: list[str] = Field(default_factory=list)
    source: str = ""
    expires_at: datetime | None = None
    created_at: datetime = Field(default_factory=now)

    class Settings:
        name = "memory_items"
        indexes = [pymongo.IndexModel([("scope", 1), ("scope_id", 1)])]


class Goal(PagedDocument):
    id: str
    title: str
    description: str = ""
    status: str = "open"
    meta_agent_id: str | None = None
    repository_id: str | None = None
    meta_run_id: str | None = None
    budget: dict[str, Any] = Field(default_factory=dict)  # a budgets.Cap: {"usd", "tokens"}; absent = uncapped
    budget_alerts: dict[str, bool] = Field(default_factory=dict)  # {"warning": true, …}: each alert emitted once
    status_reason: str = ""  # the rule behind its last move
    report: dict[str, Any] | None = None  # stored when the goal ends (goals/report.py)
    ended_at: datetime | None = None
    created_by: str = ""
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)

    class Settings:
        name = "goals"
        indexes = [pymongo.IndexModel([("page", 1)]), pymongo.IndexModel([("status", 1)])]


class Task(PagedDocument):
    id: str
    title: str
    description: str = ""
    goal_id: str | None = None
    status: str = "backlog"
    assignee_agent_id: str | None = None
    repository_id: str | None = None
    priority: int = 0
    blocked_by: list[str] = Field(default_factory=list)
    # Another task names this one in its blocked_by (marked before that task reads this one's status,
    # with the version moved): only then does this task's end look for what it unblocks. None: not
    # known (stored before the mark existed), so its end looks.
    blocks: bool | None = None
    is_meta: bool = False  # the decomposition task of a goal: its run is a meta session
    auto_ready: bool = True  # created "ready" but blocked: promoted when its blockers are done
    parent_run_id: str | None = None
    session_id: str | None = None  # planned by a meta session: the child's session id
    parent_session_id: str | None = None
    target_files: list[str] = Field(default_factory=list)
    current_run_id: str | None = None
    # The current run as it ended, for the board's card without reading the run: {"id", "status",
    # "attempt", "cost_usd" (all the task's runs together), "costs" (each run's, by id)}. Written with the
    # task's move when a run ends (nexus.core_api.workflow.tasks.follow_run), which adds the run's cost to
    # "costs" without reading the other runs; a reader trusts the facts only while "id" is current_run_id.
    # A new task starts with `no_run_ended()`; None is a task stored before briefs (its runs are read).
    run_brief: dict[str, Any] | None = None
    budget: dict[str, Any] = Field(default_factory=dict)  # this child's share of its goal's budget (Cap)
    budget_weight: float = 1.0
    blocked: str = ""  # "budget: …" while a spent budget keeps a ready task from being dispatched
    version: int = 0  # optimistic concurrency: every update names the version it read
    created_by: str = ""
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)

    class Settings:
        name = "tasks"
        indexes = [
            pymongo.IndexModel([("status", 1), ("priority", -1)]),
            pymongo.IndexModel([("blocked_by", 1)]),
            pymongo.IndexModel([("goal_id", 1)]),
            pymongo.IndexModel([("page", 1)]),
        ]


def no_run_ended() -> dict[str, Any]:
    """A new task's `run_brief`: no run ended yet, every run's cost known (none)."""
    return {"costs": {}}


class Run(PagedDocument):
    """A run as lists, transitions and the board read it. Its config (the assembled agent: prompt,
    skills, memory, tools, permissions, limits…) is its own insert-only document (RunConfigRecord,
    nexus.db.run_configs): FerretDB converts every document it reads or updates whole, so a config
    kept here was paid for by every status change and every list page. A run stored before that
    keeps `config` inline; this model ignores it, `nexus.db.run_configs.config_of` reads either."""

    id: str
    task_id: str
    agent_id: str
    agent_revision: int
    goal_id: str | None = None
    session_id: str
    parent_session_id: str | None = None
    parent_run_id: str | None = None
    status: str = "queued"
    attempt: int = 1
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    max_attempts: int = 3
    priority: int = 0
    launch_msg_id: str | None = None
    wall_clock_s: int | None = None  # its config's wall-clock limit, for the worker's deadline sweep
    reason: str = ""
    final_by: str = ""  # "verdict" (an attempt said), "retries" (attempts ran out), "operator" (cancelled)
    summary: str = ""
    branch: str = ""
    commit_sha: str = ""
    ledger_hash: str = ""
    usage: dict[str, Any] = Field(default_factory=dict)
    last_heartbeat_at: datetime | None = None
    version: int = 0
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)
    started_at: datetime | None = None
    ended_at: datetime | None = None

    class Settings:
        name = "runs"
        indexes = [
            pymongo.IndexModel([("status", 1)]),
            pymongo.IndexModel([("task_id", 1)]),
            pymongo.IndexModel([("agent_id", 1)]),
            pymongo.IndexModel([("parent_session_id", 1)]),
            pymongo.IndexModel([("page", 1)]),
        ]


class RunConfigRecord(Document):
    """A run's config as it was assembled and sent, stored once with the run and never updated
    (nexus.db.run_configs). The id is the run's."""

    id: str
    config: dict[str, Any]

    class Settings:
        name = "run_configs"


class Session(PagedDocument):
    id: str  # the session contract's sessionId
    run_id: str
    project_path: str = ""
    parent_session_id: str | None = None
    backend: str = "scripted"
    sandbox: str = ""  # what confines the session's commands: bwrap, landlock or none, as its run said
    status: str = "active"
    # Before changes were kept per attempt (SessionChangeRecord) they were pushed here; still read.
    notes: list[str] = Field(default_factory=list)
    changes: list[dict[str, Any]] = Field(default_factory=list)
    attempt: int = 1  # the latest attempt that opened this session
    opened_seq: int = 0  # the stream sequence of the run's report that set `status` (later reports only)
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)

    class Settings:
        name = "sessions"
        indexes = [
            pymongo.IndexModel([("run_id", 1)]),
            pymongo.IndexModel([("parent_session_id", 1)]),
            pymongo.IndexModel([("page", 1)]),
        ]


class SessionChangeRecord(Document):
    """One recorded change of one attempt of a session. The id is `<session>:<attempt>:<seq>`, so a
    redelivered change is refused by the primary key, the same on MongoDB and FerretDB."""

    id: str
    session_id: str
    run_id: str
    attempt: int
    seq: int
    change: dict[str, Any]
    note: str | None = None

    class Settings:
        name = "session_changes"
        indexes = [pymongo.IndexModel([("session_id", 1), ("attempt", 1), ("seq", 1)])]

    @staticmethod
    def key(session_id: str, attempt: int, seq: int) -> str:
        return f"{session_id}:{attempt}:{seq}"


class RunEvent(Document):
    """One run event, as readers get it. New events are stored in chunks (RunEventChunk); this
    collection keeps the events stored one per document before chunks, and is still read."""

    id: str  # the envelope id: a redelivered event is stored once
    run_id: str
    type: str
    subject: str
    stream_seq: int
    occurred_at: str
    data: dict[str, Any]

    class Settings:
        name = "run_events"
        indexes = [pymongo.IndexModel([("run_id", 1), ("stream_seq", 1)])]


class RunEventChunk(Document):
    """A run's events of one ingested batch, in stream order, stored as ONE insert-only document
    (nexus.db.run_events): FerretDB's cost is per document, command and field, not per byte."""

    id: str  # "<run_id>:<first stream seq>": a redelivered batch is refused by the primary key
    run_id: str
    first_seq: int
    last_seq: int
    types: list[str]  # the event types it holds
    events: bytes  # a JSON array of the events, each as RunEvent stores one without run_id

    class Settings:
        name = "run_event_chunks"
        # run_id: a run's chunks; types: the chunks holding model calls, for budgets (an equality
        # FerretDB pushes down, answered by the index instead of reading every chunk).
        indexes = [pymongo.IndexModel([("run_id", 1), ("last_seq", 1)]), pymongo.IndexModel([("types", 1)])]


class Approval(PagedDocument):
    id: str
    run_id: str
    session_id: str = ""
    action: str
    detail: str = ""
    status: str = "pending"  # pending | approved | rejected | expired
    reason: str = ""
    decided_by: str = ""
    expires_at: datetime | None = None
    created_at: datetime = Field(default_factory=now)
    decided_at: datetime | None = None

    class Settings:
        name = "approvals"
        indexes = [
            pymongo.IndexModel([("status", 1)]),
            pymongo.IndexModel([("run_id", 1)]),
            pymongo.IndexModel([("page", 1)]),
        ]


class ApiKey(Document):
    id: str
    name: str
    role: str
    key_hash: str
    prefix: str
    run_id: str | None = None  # runner tokens are valid for one run only
    revoked: bool = False
    created_by: str = ""
    created_at: datetime = Field(default_factory=now)
    last_used_at: datetime | None = None

    class Settings:
        name = "api_keys"
        indexes = [pymongo.IndexModel([("key_hash", 1)], unique=True)]


class AuditEntry(PagedDocument):
    id: str
    actor: str  # api key id
    actor_name: str = ""
    action: str  # e.g. "agent.create"
    resource: str  # e.g. "agents/agt_…"
    before_id: str | None = None
    after_id: str | None = None
    at: datetime = Field(default_factory=now)

    class Settings:
        name = "audit_entries"
        indexes = [pymongo.IndexModel([("at", -1)]), pymongo.IndexModel([("page", 1)])]


ALL_DOCUMENTS: list[type[Document]] = [
    Agent,
    AgentRevision,
    Skill,
    SkillRevision,
    Repository,
    MemoryItem,
    Goal,
    Task,
    Run,
    RunConfigRecord,
    Session,
    RunEvent,
    RunEventChunk,
    SessionChangeRecord,
    Approval,
    ApiKey,
    AuditEntry,
]


class Schedule(Document):
    """A recurring goal or task on a cron expression in a time zone. core-api writes it; the worker
    reads it to fire occurrences (the command `core.fire_schedule`)."""

    id: str
    name: str
    cron: str
    timezone: str = "UTC"
    kind: str  # task | goal
    template: dict[str, Any]  # what each occurrence creates: title, description, assignee/meta agent, repository…
    overlap: str = "skip"  # skip | enqueue | coalesce, when the previous occurrence is still running
    missed: str = "skip"  # skip | catch_up, for occurrences that passed while nothing was firing
    catch_up_limit: int = 10
    max_queued: int = 10
    enabled: bool = True
    deleted: bool = False
    anchor_at: datetime = Field(default_factory=now)  # occurrences before this never fire
    last_occurrence_at: datetime | None = None  # the latest occurrence core-api has handled
    active_item_id: str | None = None  # the task/goal of the latest started occurrence
    pending: list[datetime] = Field(default_factory=list)  # occurrences waiting for the active one to end
    fired_count: int = 0
    skipped_count: int = 0
    version: int = 0
    created_by: str = ""
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)

    class Settings:
        name = "schedules"
        indexes = [pymongo.IndexModel([("name", 1)], unique=True), pymongo.IndexModel([("enabled", 1)])]


ALL_DOCUMENTS.append(Schedule)


class ChatBinding(Document):
    """A chat user (e.g. a Telegram user id) bound by an admin to a Nexus identity with a role."""

    id: str  # "<provider>:<user id>": one binding per chat user
    provider: str = "telegram"
    user_id: str
    identity: str  # the Nexus identity the chat user acts as (a person's name or email)
    role: str  # lead | viewer
    created_by: str = ""
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)

    class Settings:
        name = "chat_bindings"


ALL_DOCUMENTS.append(ChatBinding)


class ModelPrice(Document):
    """One row of the price list runs are costed with (USD per 1M tokens); admins edit it."""

    id: str  # the model name or prefix, lower case ("gpt-4o", "claude-sonnet-4")
    input_per_mtok: float
    output_per_mtok: float
    updated_by: str = ""
    updated_at: datetime = Field(default_factory=now)

    class Settings:
        name = "model_prices"


class AgentBudget(Document):
    """An agent's daily cap (UTC days), in USD and/or tokens; absent fields are uncapped."""

    id: str  # the agent id
    daily_usd: float | None = None
    daily_tokens: int | None = None
    alerts: dict[str, bool] = Field(default_factory=dict)  # {"<day>:warning": true, …}: each alert emitted once
    updated_by: str = ""
    updated_at: datetime = Field(default_factory=now)

    class Settings:
        name = "agent_budgets"


ALL_DOCUMENTS += [ModelPrice, AgentBudget]


class IdempotencyKey(Document):
    """A create asked with an `Idempotency-Key`: what it named, so the same request asked again (a client
    retrying after a lost answer or a core-api that died mid-request) gets the same thing, never a second."""

    id: str  # a digest of (the caller's key id, what is created, the client's key): the key itself is not kept
    digest: str  # of the request's body: the same key with another body is refused
    resource_id: str  # the id the created thing has (or will have: chosen before it is stored)
    created_at: datetime = Field(default_factory=now)

    class Settings:
        name = "idempotency_keys"


ALL_DOCUMENTS.append(IdempotencyKey)

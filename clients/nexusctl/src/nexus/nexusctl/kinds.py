"""The resource kinds nexusctl knows: their API path, the names a user may type, and the columns
`get` shows. Adding a kind is adding one entry here."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nexus.domain.json_types import JsonObject

Column = tuple[str, Callable[[JsonObject], Any]]


def key(*names: str) -> Callable[[JsonObject], Any]:
    """The first present field among `names` (the API speaks snake_case, sessions camelCase)."""

    def get(obj: JsonObject) -> Any:
        for name in names:
            value: Any = obj
            for part in name.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value not in (None, ""):
                return value
        return None

    return get


def age(*names: str) -> Callable[[JsonObject], str]:
    getter = key(*names)

    def get(obj: JsonObject) -> str:
        value = getter(obj)
        if not value:
            return ""
        try:
            then = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
        if then.tzinfo is None:
            then = then.replace(tzinfo=UTC)
        return human_duration((datetime.now(UTC) - then).total_seconds())

    return get


def human_duration(seconds: float) -> str:
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _short(n: int, getter: Callable[[JsonObject], Any]) -> Callable[[JsonObject], str]:
    def get(obj: JsonObject) -> str:
        text = " ".join(str(getter(obj) or "").split())
        return text if len(text) <= n else text[: n - 1] + "…"

    return get


@dataclass(frozen=True)
class Kind:
    name: str  # plural, as in the API path
    singular: str
    path: str
    aliases: tuple[str, ...]
    columns: tuple[Column, ...]
    manifest: str | None = None  # the `kind:` of an apply manifest
    id_field: str = "id"
    deletable: bool = False
    filters: tuple[str, ...] = field(default_factory=tuple)  # query parameters `get` passes through

    def ident(self, obj: JsonObject) -> str:
        return str(key(self.id_field, "id")(obj) or "")


AGENTS = Kind(
    "agents",
    "agent",
    "/v1/agents",
    ("agent", "ag", "agt"),
    (
        ("NAME", key("name")),
        ("REVISION", key("revision")),
        ("PROVIDER", key("spec.llm.provider")),
        ("MODEL", key("spec.llm.model")),
        ("SKILLS", lambda o: ",".join(o.get("spec", {}).get("skills", []))),
        ("AGE", age("created_at")),
    ),
    manifest="Agent",
    id_field="name",
    deletable=True,
)
SKILLS = Kind(
    "skills",
    "skill",
    "/v1/skills",
    ("skill", "sk", "skl"),
    (
        ("NAME", key("name")),
        ("VERSION", key("version")),
        ("DESCRIPTION", _short(50, key("description"))),
        ("AGE", age("created_at")),
    ),
    manifest="Skill",
    id_field="name",
    deletable=True,
)
REPOSITORIES = Kind(
    "repositories",
    "repository",
    "/v1/repositories",
    ("repository", "repos", "repo"),
    (
        ("NAME", key("name")),
        ("URL", key("url")),
        ("BRANCH", key("default_branch")),
        ("CREDENTIALS", lambda o: "yes" if o.get("has_credentials") else "-"),
        ("AGE", age("created_at")),
    ),
    manifest="Repository",
    id_field="name",
    deletable=True,
)
TASKS = Kind(
    "tasks",
    "task",
    "/v1/tasks",
    ("task", "tk"),
    (
        ("ID", key("id")),
        ("TITLE", _short(40, key("title"))),
        ("STATUS", key("status")),
        ("ASSIGNEE", key("assignee_agent_id")),
        ("RUN", key("current_run_id")),
        ("AGE", age("created_at")),
    ),
    manifest="Task",
    filters=("status", "goal_id", "assignee_agent_id"),
)
GOALS = Kind(
    "goals",
    "goal",
    "/v1/goals",
    ("goal", "gl"),
    (
        ("ID", key("id")),
        ("TITLE", _short(40, key("title"))),
        ("STATUS", key("status")),
        ("META RUN", key("meta_run_id")),
        ("AGE", age("created_at")),
    ),
    filters=("status", "created_by"),
)
RUNS = Kind(
    "runs",
    "run",
    "/v1/runs",
    ("run", "rn"),
    (
        ("ID", key("id")),
        ("STATUS", key("status")),
        ("TASK", key("task_id")),
        ("AGENT", lambda o: f"{o.get('agent_id')}@{o.get('agent_revision')}"),
        ("ATTEMPT", lambda o: f"{o.get('attempt')}/{o.get('max_attempts')}"),
        ("AGE", age("created_at")),
    ),
    filters=("status", "agent_id", "task_id", "goal_id"),
)
SESSIONS = Kind(
    "sessions",
    "session",
    "/v1/sessions",
    ("session", "ses"),
    (
        ("SESSION", key("sessionId", "session_id")),
        ("RUN", key("runId", "run_id")),
        ("PARENT", key("parentSessionId", "parent_session_id")),
        ("STATUS", key("status")),
        ("CHANGES", lambda o: len(o.get("changes") or [])),
        ("AGE", age("createdAt", "created_at")),
    ),
    id_field="sessionId",
    filters=("run_id", "parent_session_id", "status"),
)
APPROVALS = Kind(
    "approvals",
    "approval",
    "/v1/approvals",
    ("approval", "apr"),
    (
        ("ID", key("id")),
        ("RUN", key("run_id")),
        ("ACTION", key("action")),
        ("STATUS", key("status")),
        ("DETAIL", _short(40, key("detail"))),
        ("AGE", age("created_at")),
    ),
    filters=("status", "run_id", "action"),
)
KEYS = Kind(
    "keys",
    "key",
    "/v1/api-keys",
    ("key", "api-keys", "api-key", "apikeys", "apikey"),
    (
        ("ID", key("id")),
        ("NAME", key("name")),
        ("ROLE", key("role")),
        ("PREFIX", key("prefix")),
        ("REVOKED", lambda o: "yes" if o.get("revoked") else "-"),
        ("AGE", age("created_at")),
    ),
    deletable=True,
    filters=("role", "revoked", "run_id"),
)
AUDIT = Kind(
    "audit",
    "audit entry",
    "/v1/audit",
    ("audits", "aud"),
    (
        ("ID", key("id")),
        ("ACTOR", key("actor_name", "actor")),
        ("ACTION", key("action")),
        ("RESOURCE", key("resource")),
        ("BEFORE", key("before_id")),
        ("AFTER", key("after_id")),
        ("AGE", age("at", "created_at", "occurred_at")),
    ),
    filters=("actor", "action", "resource"),
)
MEMORY = Kind(
    "memory",
    "memory item",
    "/v1/memory",
    ("memories", "mem", "memoryitem", "memoryitems"),
    (
        ("ID", key("id")),
        ("SCOPE", lambda o: ":".join(str(x) for x in (o.get("scope"), o.get("scope_id")) if x)),
        ("TAGS", lambda o: ",".join(o.get("tags") or [])),
        ("CONTENT", _short(50, key("content"))),
        ("AGE", age("created_at")),
    ),
    manifest="MemoryItem",
    deletable=True,
    filters=("scope", "scope_id", "tag", "source", "include_expired"),
)

KINDS: tuple[Kind, ...] = (AGENTS, SKILLS, REPOSITORIES, TASKS, GOALS, RUNS, SESSIONS, APPROVALS, KEYS, AUDIT, MEMORY)
_BY_NAME = {alias: k for k in KINDS for alias in (k.name, k.singular, *k.aliases)}
BY_MANIFEST = {k.manifest: k for k in KINDS if k.manifest}


class UnknownKind(Exception):
    pass


def lookup(name: str) -> Kind:
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        known = ", ".join(k.name for k in KINDS)
        raise UnknownKind(f"unknown kind {name!r}; known kinds: {known}") from None

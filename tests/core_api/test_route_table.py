"""The route × role table, written down: every operation of the OpenAPI document (and every route the
app serves, documented or not) needs the capability this table names — a new route, or a guard
changed to a weaker one, fails here until the table says so on purpose. What each capability grants
each role is pinned too, so widening a role is a visible change. That the guards do what their
capability says, call by call, is tests/core_api/test_access.py."""

import re
from pathlib import Path

from litestar import Litestar
from litestar.routes import HTTPRoute

from nexus.core_api.app import create_app
from nexus.domain.roles import GRANTS, Capability, Role
from tests.core_api.conftest import make_settings
from tests.core_api.test_access import handler_capabilities

ROLE_GETS = {
    Role.ADMIN: {
        Capability.READ,
        Capability.MANAGE_AGENTS,
        Capability.MANAGE_WORK,
        Capability.DECIDE_APPROVALS,
        Capability.MANAGE_KEYS,
    },
    Role.LEAD: {Capability.READ, Capability.MANAGE_WORK, Capability.DECIDE_APPROVALS},
    Role.VIEWER: {Capability.READ},
    Role.RUNNER: {Capability.RUN_SELF},  # and READ of its own run: the guard's exception, tested by the matrix
}
# Signed by the board, not keyed: their own checks are tests/core_api/test_board.py.
UNKEYED = {"GET /healthz", "GET /readyz", "POST /v1/webhooks/jira", "POST /v1/webhooks/plane"}
TABLE: dict[Capability, tuple[str, ...]] = {
    Capability.DECIDE_APPROVALS: (
        "POST /v1/approvals/{approval_id}/approve",
        "POST /v1/approvals/{approval_id}/reject",
    ),
    Capability.MANAGE_AGENTS: (
        "POST /v1/agents",
        "DELETE /v1/agents/{agent_id}",
        "PUT /v1/agents/{agent_id}",
        "POST /v1/memory",
        "DELETE /v1/memory/{item_id}",
        "PATCH /v1/memory/{item_id}",
        "DELETE /v1/prices/{model}",
        "PUT /v1/prices/{model}",
        "POST /v1/repositories",
        "DELETE /v1/repositories/{repository_id}",
        "PUT /v1/repositories/{repository_id}",
        "POST /v1/schedules",
        "DELETE /v1/schedules/{schedule_id}",
        "PUT /v1/schedules/{schedule_id}",
        "POST /v1/skills",
        "DELETE /v1/skills/{skill_id}",
        "PUT /v1/skills/{skill_id}",
    ),
    Capability.MANAGE_KEYS: (
        "GET /v1/api-keys",
        "POST /v1/api-keys",
        "DELETE /v1/api-keys/{key_id}",
        "GET /v1/api-keys/{key_id}",
        "GET /v1/audit",
        "GET /v1/board/providers",
        "DELETE /v1/board/providers/{scope_ref}",
        "GET /v1/board/providers/{scope_ref}",
        "PUT /v1/board/providers/{scope_ref}",
        "GET /v1/chat-bindings",
        "POST /v1/chat-bindings",
        "DELETE /v1/chat-bindings/{binding_id}",
        "GET /v1/chat-bindings/{binding_id}",
        "POST /v1/runs/{run_id}/token",
        "POST /v1/ui/login-links",
    ),
    Capability.MANAGE_WORK: (
        "POST /v1/board/cards/{task_id}/move",
        "PUT /v1/budgets/agents/{agent_ref}",
        "POST /v1/goals",
        "PUT /v1/goals/{goal_id}/budget",
        "POST /v1/goals/{goal_id}/cancel",
        "POST /v1/runs/{run_id}/cancel",
        "POST /v1/runs/{run_id}/retry",
        "POST /v1/tasks",
        "PATCH /v1/tasks/{task_id}",
        "POST /v1/tasks/{task_id}/status",
    ),
    Capability.READ: (
        "GET /v1/agents",
        "GET /v1/agents/{agent_id}",
        "GET /v1/agents/{agent_id}/memory/preview",
        "GET /v1/agents/{agent_id}/revisions",
        "GET /v1/agents/{agent_id}/revisions/{number}",
        "GET /v1/approvals",
        "GET /v1/approvals/{approval_id}",
        "GET /v1/board",
        "GET /v1/board/events",
        "GET /v1/budgets/agents/{agent_ref}",
        "GET /v1/events",
        "GET /v1/goals",
        "GET /v1/goals/{goal_id}",
        "GET /v1/goals/{goal_id}/events",
        "GET /v1/goals/{goal_id}/tasks",
        "GET /v1/memory",
        "GET /v1/memory/{item_id}",
        "GET /v1/prices",
        "GET /v1/prices/{model}",
        "GET /v1/repositories",
        "GET /v1/repositories/{repository_id}",
        "GET /v1/runs",
        "GET /v1/runs/{run_id}",
        "GET /v1/runs/{run_id}/events",
        "GET /v1/runs/{run_id}/sessions/tree",
        "GET /v1/runs/{run_id}/verify",
        "GET /v1/schedules",
        "GET /v1/schedules/{schedule_id}",
        "GET /v1/sessions",
        "GET /v1/sessions/{session_id}",
        "GET /v1/skills",
        "GET /v1/skills/{skill_id}",
        "GET /v1/skills/{skill_id}/versions",
        "GET /v1/skills/{skill_id}/versions/{number}",
        "GET /v1/tasks",
        "GET /v1/tasks/{task_id}",
    ),
}
_TYPED = re.compile(r":\w+}")


def served(app: Litestar) -> dict[str, Capability | None]:
    """'METHOD /path' of every route outside the UI and the schema pages → its one capability guard."""
    out: dict[str, Capability | None] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith(("/ui", "/schema")):
            continue
        for handler in route.route_handlers:
            caps = handler_capabilities(handler)
            for method in set(handler.http_methods) - {"OPTIONS", "HEAD"}:
                out[f"{method} {_TYPED.sub('}', route.path)}"] = caps[0] if len(caps) == 1 else None
    return out


def test_every_operation_needs_the_capability_the_table_names(tmp_path: Path) -> None:
    app = create_app(make_settings("nats://127.0.0.1:1", "mongodb://127.0.0.1:1", tmp_path, "table"), background=False)
    documented = {
        f"{method.upper()} {path}"
        for path, item in app.openapi_schema.to_schema()["paths"].items()
        for method in item
        if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE")
    }
    guards = served(app)
    wanted = {op: cap for cap, ops in TABLE.items() for op in ops}
    assert documented - UNKEYED <= set(guards), "documented but not served"
    assert set(guards) - UNKEYED - documented == set(), "served but left out of the OpenAPI document"
    assert sorted(set(guards) - UNKEYED - set(wanted)) == [], "routes missing from TABLE: name their capability"
    assert sorted(set(wanted) - set(guards)) == [], "TABLE names routes that are gone"
    wrong = {op: (guards[op], cap) for op, cap in wanted.items() if guards[op] != cap}
    assert wrong == {}, "(guarded by, table says)"
    assert {role: set(caps) for role, caps in GRANTS.items()} == ROLE_GETS

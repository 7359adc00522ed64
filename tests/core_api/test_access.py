"""THE route × role matrix: every route the app serves, called by every role, is allowed or denied
exactly as its guard's capability says; a route without a guard fails the test."""

import re

import httpx
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute

from nexus.domain.roles import Capability, Role, allows
from tests.core_api.conftest import bearer, new_key, new_run

pytestmark = pytest.mark.infra

PUBLIC = re.compile(
    r"^/(healthz|readyz|schema|v1/webhooks|ui)(/|$)"
)  # webhooks: a signature, not a key (tests/core_api/test_board.py)
# ui: a session cookie, not a key; its own matrix is tests/core_api/test_ui.py
_PARAM = re.compile(r"\{(\w+):(\w+)\}")


def handler_capabilities(handler) -> list[Capability]:
    """The capabilities a route handler's guards ask for."""
    guards = [getattr(g, "func", g) for g in handler.resolve_guards()]  # litestar wraps them in AsyncCallable
    return [g.capability for g in guards if hasattr(g, "capability")]


def endpoints(app: Litestar) -> list[tuple[str, str, Capability | None]]:
    """(method, path template, capability) for every handler; None when it has no capability guard."""
    out = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or PUBLIC.match(route.path):
            continue
        for handler in route.route_handlers:
            methods = set(handler.http_methods) - {"OPTIONS", "HEAD"}
            caps = handler_capabilities(handler)
            for method in methods:
                out.append((method, route.path, caps[0] if len(caps) == 1 else None))
    return sorted(out)


def fill(path: str, run_id: str) -> str:
    return _PARAM.sub(
        lambda m: run_id if m.group(1) == "run_id" else ("1" if m.group(2) == "int" else "zz_missing"), path
    )


def expected(who: str, cap: Capability, path: str) -> int | None:
    """401 or 403 when refused, None when allowed (then any status but 401/403/5xx)."""
    if who == "anonymous":
        return 401
    if who.startswith("runner"):
        # A runner token is bound to run A; the path names run A when it has a run_id.
        own = who == "runner-a" and "{run_id:" in path
        return None if own and cap in (Capability.READ, Capability.RUN_SELF) else 403
    return None if allows(Role(who), cap) else 403


async def call(client: httpx.AsyncClient, method: str, url: str, headers: dict) -> int:
    # Streamed: an allowed SSE route answers 200 and would never end; the status is all we need.
    async with client.stream(
        method, url, headers=headers, json={} if method in ("POST", "PUT", "PATCH") else None
    ) as r:
        return r.status_code


async def test_every_route_for_every_role(app: Litestar, http: httpx.AsyncClient, settings) -> None:
    routes = endpoints(app)
    unguarded = [(m, p) for m, p, cap in routes if cap is None]
    assert not unguarded, f"routes without exactly one capability guard: {unguarded}"
    assert len(routes) >= 40, routes

    run_a, run_b = await new_run(http), await new_run(http)
    keys = {"admin": settings.admin_key, "lead": await new_key(http, "lead"), "viewer": await new_key(http, "viewer")}
    for name, run in (("runner-a", run_a), ("runner-b", run_b)):
        r = await http.post(f"/v1/runs/{run['id']}/token")
        keys[name] = r.json()["key"]

    failures, tally = (
        [],
        {who: {"allowed": 0, "denied": 0} for who in ("anonymous", "runner-b", "runner-a", "viewer", "lead", "admin")},
    )
    # DELETE last, and the admin last of all: its allowed mutations must not change what others see.
    order = {"GET": 0, "PUT": 1, "PATCH": 1, "POST": 2, "DELETE": 3}
    whos = list(tally)
    for method, path, cap in sorted(routes, key=lambda r: order[r[0]]):
        url = fill(path, run_a["id"])
        for who in whos:
            headers = {"Authorization": ""} if who == "anonymous" else bearer(keys[who])
            status = await call(http, method, url, headers)
            want = expected(who, cap, path)
            ok = status == want if want else status not in (401, 403) and status < 500
            tally[who]["denied" if want else "allowed"] += 1
            if not ok:
                failures.append(f"{who:9} {method:6} {path} ({cap.value}): got {status}, want {want or 'allowed'}")
    assert not failures, "\n".join(failures)
    # The matrix means something only if each role met both answers it can get.
    assert tally["anonymous"]["allowed"] == tally["runner-b"]["allowed"] == tally["admin"]["denied"] == 0
    assert all(tally[w]["allowed"] and tally[w]["denied"] for w in ("runner-a", "viewer", "lead")), tally

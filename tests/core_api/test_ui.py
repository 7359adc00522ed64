"""The web UI over plain HTTP: every page renders for its role, a bad form is a 4xx naming the field
(the API's own validation), a form without its CSRF token or from a viewer is refused."""

import contextlib
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from nexus.db.documents import Approval
from nexus.domain.roles import Capability, Role, allows
from tests.core_api.conftest import in_app, new_agent, new_key, new_run, store_status
from tests.core_api.test_access import handler_capabilities

pytestmark = pytest.mark.infra
CSRF = re.compile(r'name="_csrf" value="([^"]+)"')
UI_OPEN = {"/ui", "/ui/login", "/ui/logout", "/ui/login/link"}  # signing in and out need no role


def csrf_of(html: str) -> str:
    m = CSRF.search(html)
    assert m, html[:2000]
    return m.group(1)


@contextlib.contextmanager
def jar(client: AsyncTestClient, cookies: httpx.Cookies) -> Iterator[AsyncTestClient]:
    """One app, one test client: identities differ only by the session cookie the client sends."""
    saved, follows = client.cookies, client.follow_redirects
    client.cookies, client.follow_redirects = cookies, False  # a redirect is what the tests look at
    try:
        yield client
    finally:
        client.cookies, client.follow_redirects = saved, follows


async def sign_in(client: AsyncTestClient, key: str) -> httpx.Cookies:
    with jar(client, httpx.Cookies()) as c:
        r = await c.get("/ui/login")
        r = await c.post("/ui/login", data={"_csrf": csrf_of(r.text), "key": key, "next": "/ui/agents"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/agents", r.text
        return c.cookies


@pytest.fixture(scope="module")
async def admin(client: AsyncTestClient, settings) -> httpx.Cookies:
    return await sign_in(client, settings.admin_key)


async def csrf_on(c: AsyncTestClient, path: str) -> str:
    r = await c.get(path)
    assert r.status_code == 200, r.text
    return csrf_of(r.text)


async def test_signed_out_is_sent_to_sign_in_and_a_bad_key_is_refused(client: AsyncTestClient) -> None:
    with jar(client, httpx.Cookies()) as c:
        r = await c.get("/ui/runs")
        assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=/ui/runs"
        r = await c.get("/ui/login")
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
        r = await c.post("/ui/login", data={"_csrf": csrf_of(r.text), "key": "nxk_not_a_key"})
        assert r.status_code == 401 and "unknown or revoked key" in r.text
        assert (await c.get("/ui/runs")).status_code == 303  # still signed out
        r = await c.get("/ui/login", headers={"X-Forwarded-Proto": "https"})
        assert "secure" in r.headers["set-cookie"].lower()  # behind TLS the cookie never travels in clear
        assert "secure" not in (await c.get("/ui/login")).headers["set-cookie"].lower()


async def test_every_page_renders_for_an_admin(client: AsyncTestClient, admin: httpx.Cookies) -> None:
    agent = await new_agent(client, description="pages")
    run = await new_run(client, agent)
    r = await client.put(f"/v1/agents/{agent['id']}", json={**agent["spec"], "system_prompt": "You help more."})
    assert r.status_code == 200, r.text
    r = await client.post("/v1/skills", json={"name": f"sk-{uuid.uuid4().hex[:6]}", "content": "# Title\n\n*be kind*"})
    skill = r.json()
    r = await client.post("/v1/goals", json={"title": "a goal for the pages"})
    goal = r.json()
    pages = {
        "/ui/agents": agent["name"],
        f"/ui/agents/{agent['id']}": "You help more.",
        "/ui/agents/new": "Create agent",
        f"/ui/agents/{agent['id']}/diff?a=1&b=2": "+system_prompt: You help more.",
        "/ui/skills": skill["name"],
        f"/ui/skills/{skill['id']}": "<em>be kind</em>",
        "/ui/memory": "Remember something",
        "/ui/board": run["task_id"],
        "/ui/runs": run["id"],
        f"/ui/runs/{run['id']}": run["agent_id"],
        f"/ui/runs/{run['id']}/summary": "Attempts",
        f"/ui/tasks/{run['task_id']}": run["id"],
        "/ui/tasks/new": "Start task",
        "/ui/approvals": "Approvals",
        "/ui/goals": goal["title"],
        f"/ui/goals/{goal['id']}": "Progress",
        "/ui/admin/keys": "bootstrap-admin",
        "/ui/admin/audit": "agent.update",
    }
    with jar(client, admin) as c:
        for path, shown in pages.items():
            r = await c.get(path)
            assert r.status_code == 200, (path, r.text[:3000])
            assert r.headers["content-type"].startswith("text/html")
            assert shown in r.text, (path, shown)
            assert re.fullmatch(r"app;dur=\d+\.\d\d", r.headers["server-timing"]), path  # what bench.ui reads
        for ref in (agent["id"], agent["name"]):  # named either way, the agent page lists its runs by revision
            r = await c.get(f"/ui/agents/{ref}")
            assert r.status_code == 200 and run["id"] in r.text and "You help more." in r.text, ref
        for missing in ("/ui/runs/run_nope", "/ui/agents/nope", "/ui/goals/goal_nope"):
            r = await c.get(missing)
            assert r.status_code == 404 and "not found" in r.text, missing


async def test_agent_forms_create_edit_and_refuse_what_the_api_refuses(
    client: AsyncTestClient, admin: httpx.Cookies
) -> None:
    name = f"ui-{uuid.uuid4().hex[:8]}"
    with jar(client, admin) as c:
        token = await csrf_on(c, "/ui/agents/new")
        r = await c.post(
            "/ui/agents",
            data={
                "_csrf": token,
                "mode": "form",
                "name": name,
                "system_prompt": "Form-made.",
                "tools": "read_file, write_file",
            },
        )
        assert r.status_code == 303, r.text
        agent_path = r.headers["location"]
        r = await c.get(agent_path)
        assert "Form-made." in r.text and "revision 1" in r.text

        # The same body the API refuses is refused here, naming the same field.
        api = await client.post("/v1/agents", json={"name": "Bad Name", "system_prompt": "x"})
        (api_field,) = [e["field"] for e in api.json()["errors"]]
        r = await c.post("/ui/agents", data={"_csrf": token, "mode": "form", "name": "Bad Name", "system_prompt": "x"})
        assert r.status_code == api.status_code == 422
        assert f'data-field="{api_field}"' in r.text and 'value="Bad Name"' in r.text  # the form keeps what was typed

        r = await c.post(
            "/ui/agents",
            data={"_csrf": token, "mode": "yaml", "yaml": f"name: {name}-y\nsystem_prompt: x\nflavour: sweet\n"},
        )
        assert r.status_code == 422 and 'data-field="flavour"' in r.text
        r = await c.post("/ui/agents", data={"_csrf": token, "mode": "yaml", "yaml": "- just\n- a list\n"})
        assert r.status_code == 422 and 'data-field="yaml"' in r.text
        r = await c.post("/ui/agents", data={"_csrf": token, "mode": "yaml", "yaml": "name: [unclosed\n"})
        assert r.status_code == 422 and 'data-field="yaml"' in r.text
        r = await c.post("/ui/agents", data={"_csrf": token, "mode": "form", "name": name, "system_prompt": "again"})
        assert r.status_code == 409 and 'data-field="name"' in r.text

        # Editing as YAML keeps what the form does not show and makes revision 2; the diff shows the change.
        r = await c.post(
            agent_path,
            data={
                "_csrf": token,
                "mode": "yaml",
                "yaml": f"name: {name}\nsystem_prompt: YAML-made.\ntools: [read_file]\npermissions: {{can_commit: true}}\n",
            },
        )
        assert r.status_code == 303, r.text
        agent = (await client.get(f"/v1/agents/{name}")).json()
        assert agent["revision"] == 2 and agent["spec"]["permissions"]["can_commit"] is True
        r = await c.post(
            agent_path,
            data={"_csrf": token, "mode": "form", "name": name, "system_prompt": "Form again.", "tools": "read_file"},
        )
        assert r.status_code == 303
        agent = (await client.get(f"/v1/agents/{name}")).json()
        assert agent["revision"] == 3 and agent["spec"]["permissions"]["can_commit"] is True  # not on the form, kept
        r = await c.get(f"{agent_path}/diff?a=1&b=3")
        assert "-system_prompt: Form-made." in r.text and "+system_prompt: Form again." in r.text
        r = await c.post(
            agent_path,
            data={"_csrf": token, "mode": "form", "name": name, "system_prompt": "", "skills": "no-such-skill"},
        )
        assert r.status_code == 422


async def test_other_forms_answer_4xx_naming_the_field(client: AsyncTestClient, admin: httpx.Cookies) -> None:
    with jar(client, admin) as c:
        token = await csrf_on(c, "/ui/board")
        cases = [
            ("/ui/tasks", {"title": "", "assignee": "nobody-here"}, 422),
            ("/ui/tasks", {"title": "t", "assignee": "nobody-here"}, 422),
            ("/ui/goals", {"title": ""}, 422),
            ("/ui/memory", {"scope": "galaxy", "content": "x"}, 422),
            ("/ui/memory", {"scope": "global", "content": "x", "ttl_s": "soon"}, 422),
            ("/ui/skills", {"name": "Not A Slug", "content": "x"}, 422),
            ("/ui/admin/keys", {"name": "k", "role": "emperor"}, 422),
        ]
        for path, form, status in cases:
            r = await c.post(path, data={"_csrf": token, **form})
            assert r.status_code == status, (path, form, r.status_code, r.text[:2000])
            assert 'class="errors"' in r.text, (path, form)
        r = await c.post("/ui/runs/run_nope/cancel", data={"_csrf": token})
        assert r.status_code == 404
        run = await new_run(client)
        r = await c.post(f"/ui/runs/{run['id']}/retry", data={"_csrf": token})
        assert r.status_code == 409 and "still" in r.text  # a run that has not ended cannot be retried
        r = await c.post(f"/ui/board/cards/{run['task_id']}/move", data={"_csrf": token, "column": "waiting_approval"})
        assert r.status_code == 409


async def test_posts_without_the_session_csrf_token_are_refused(
    client: AsyncTestClient, admin: httpx.Cookies, settings
) -> None:
    with jar(client, admin) as c:
        name = f"csrf-{uuid.uuid4().hex[:8]}"
        r = await c.post("/ui/agents", data={"mode": "form", "name": name, "system_prompt": "x"})
        assert r.status_code == 403 and "CSRF" in r.text
        r = await c.post("/ui/agents", data={"_csrf": "forged", "mode": "form", "name": name, "system_prompt": "x"})
        assert r.status_code == 403
        other = await sign_in(client, settings.admin_key)  # another session's token is not this one's
    with jar(client, other) as c:
        foreign = await csrf_on(c, "/ui/agents")
    with jar(client, admin) as c:
        r = await c.post("/ui/agents", data={"_csrf": foreign, "mode": "form", "name": name, "system_prompt": "x"})
        assert r.status_code == 403
        r = await c.post(
            "/ui/agents",
            data={"mode": "form", "name": name, "system_prompt": "x"},
            headers={"X-CSRF-Token": await csrf_on(c, "/ui/agents")},
        )
        assert r.status_code == 303  # htmx sends the token as a header
    assert (await client.get(f"/v1/agents/{name}")).status_code == 200


async def test_a_viewer_reads_but_sees_no_buttons_and_a_forged_post_is_refused(client: AsyncTestClient) -> None:
    run = await new_run(client)
    approval = Approval(id=f"apr_{uuid.uuid4().hex}", run_id=run["id"], action="command", detail="touch x")
    await in_app(client, approval.insert)
    viewer = await sign_in(client, await new_key(client, "viewer"))
    with jar(client, viewer) as c:
        r = await c.get("/ui/approvals")
        assert r.status_code == 200 and "touch x" in r.text and "data-decide" not in r.text
        token = csrf_of(r.text)
        r = await c.get("/ui/agents")
        assert "New agent" not in r.text
        r = await c.get(f"/ui/runs/{run['id']}")
        assert r.status_code == 200 and "Cancel" not in r.text
        r = await c.post(f"/ui/approvals/{approval.id}/approve", data={"_csrf": token, "reason": "forged"})
        assert r.status_code == 403
        r = await c.post(
            "/ui/agents", data={"_csrf": token, "mode": "form", "name": "viewer-made", "system_prompt": "x"}
        )
        assert r.status_code == 403
        assert (await c.get("/ui/admin/keys")).status_code == 403
    assert (await client.get(f"/v1/approvals/{approval.id}")).json()["status"] == "pending"


async def test_approvals_are_decided_with_a_reason_and_sign_out_ends_the_session(
    client: AsyncTestClient, settings
) -> None:
    run = await new_run(client)
    approval = Approval(id=f"apr_{uuid.uuid4().hex}", run_id=run["id"], action="command", detail="rm -rf build")
    await in_app(client, approval.insert)
    lead = await sign_in(client, await new_key(client, "lead"))
    with jar(client, lead) as c:
        token = await csrf_on(c, "/ui/approvals")
        r = await c.post(f"/ui/approvals/{approval.id}/reject", data={"_csrf": token, "reason": "  "})
        assert r.status_code == 422 and 'data-field="reason"' in r.text
        r = await c.post(f"/ui/approvals/{approval.id}/reject", data={"_csrf": token, "reason": "not today"})
        assert r.status_code == 303, r.text
        r = await c.post(f"/ui/approvals/{approval.id}/approve", data={"_csrf": token})
        assert r.status_code == 409  # decided once
        r = await c.post("/ui/logout", data={"_csrf": token})
        assert r.status_code == 303
        assert (await c.get("/ui/approvals")).status_code == 303
    decided = (await client.get(f"/v1/approvals/{approval.id}")).json()
    assert (decided["status"], decided["reason"]) == ("rejected", "not today")


async def test_a_revoked_key_ends_its_sessions(client: AsyncTestClient) -> None:
    key = await new_key(client, "viewer")
    session = await sign_in(client, key)
    keys = (await client.get("/v1/api-keys", params={"role": "viewer"})).json()["items"]
    key_id = next(k["id"] for k in keys if key.startswith(k["prefix"]))
    assert (await client.delete(f"/v1/api-keys/{key_id}")).status_code == 204
    with jar(client, session) as c:
        assert (await c.get("/ui/runs")).status_code == 303


def ui_endpoints(app) -> list[tuple[str, str, Capability]]:
    """(method, path, capability) of every UI page and form; each must have exactly one capability guard."""
    out, unguarded = [], []
    for route in app.routes:
        if (
            not isinstance(route, HTTPRoute)
            or not route.path.startswith("/ui")
            or route.path in UI_OPEN
            or route.path.startswith("/ui/static")
        ):
            continue
        for handler in route.route_handlers:
            caps = handler_capabilities(handler)
            for method in set(handler.http_methods) - {"OPTIONS", "HEAD"}:
                (
                    out.append((method, route.path, caps[0]))
                    if len(caps) == 1
                    else unguarded.append((method, route.path))
                )
    assert not unguarded, f"UI routes without exactly one capability guard: {unguarded}"
    return sorted(out, key=lambda r: (r[0] != "GET", r[1]))


async def test_every_ui_route_for_every_role(app, server_url: str, http: httpx.AsyncClient, settings) -> None:
    """The same role rules as the API's matrix, through the cookie: allowed is neither 401/403 nor 5xx."""
    routes = ui_endpoints(app)
    assert len(routes) >= 30, routes
    keys = {"viewer": await new_key(http, "viewer"), "lead": await new_key(http, "lead"), "admin": settings.admin_key}
    failures, tally = [], {w: {"allowed": 0, "denied": 0} for w in keys}
    for who, key in keys.items():
        async with httpx.AsyncClient(base_url=server_url, timeout=30) as c:
            r = await c.get("/ui/login")
            token = csrf_of(r.text)
            r = await c.post("/ui/login", data={"_csrf": token, "key": key})
            assert r.status_code == 303, r.text
            token = csrf_of((await c.get("/ui/runs")).text)
            for method, path, cap in routes:
                url = re.sub(r"\{\w+:\w+\}", "zz_missing", path)
                data = {"_csrf": token} if method == "POST" else None
                async with c.stream(method, url, data=data) as r:
                    status = r.status_code
                allowed = allows(Role(who), cap)
                ok = status not in (401, 403) and status < 500 if allowed else status == 403
                tally[who]["allowed" if allowed else "denied"] += 1
                if not ok:
                    failures.append(f"{who:7} {method:5} {path} ({cap.value}): got {status}")
    assert not failures, "\n".join(failures)
    assert tally["admin"]["denied"] == 0 and tally["viewer"]["denied"] and tally["lead"]["denied"], tally


async def test_a_login_link_signs_in_once_with_its_role(client: AsyncTestClient) -> None:
    r = await client.post("/v1/ui/login-links", json={"name": "alice", "role": "viewer", "ttl_s": 600})
    assert r.status_code == 201, r.text
    link = r.json()["path"]
    assert link.startswith("/ui/login/link?t=") and "nxk_" not in link  # the key inside is sealed
    with jar(client, httpx.Cookies()) as c:
        r = await c.get(link)
        assert r.status_code == 200 and "Sign in as alice (viewer)" in r.text  # a preview fetching it spends nothing
        token, t = csrf_of(r.text), link.split("t=", 1)[1]
        r = await c.post("/ui/login/link", data={"_csrf": token, "t": t})
        assert r.status_code == 303, r.text
        r = await c.get("/ui/approvals")
        assert r.status_code == 200 and "alice-ui · viewer" in r.text
        assert (await c.get("/ui/admin/keys")).status_code == 403  # the link's role, no more
    with jar(client, httpx.Cookies()) as c:
        r = await c.get(link)
        assert r.status_code == 401 and "expired or was used" in r.text
        r = await c.get("/ui/login")
        r = await c.post("/ui/login/link", data={"_csrf": csrf_of(r.text), "t": link.split("t=", 1)[1]})
        assert r.status_code == 401  # used once: never again
        r = await c.post("/ui/login/link", data={"_csrf": csrf_of((await c.get("/ui/login")).text), "t": "forged"})
        assert r.status_code == 401
    audit = (await client.get("/v1/audit", params={"action": "api_key.*"})).json()["items"]
    assert any(
        e["actor_name"] == "alice-link" and e["action"] == "api_key.revoke" for e in audit
    )  # the use is on the record
    r = await client.post("/v1/ui/login-links", json={"name": "bob", "role": "emperor"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "role"


async def ui_stream(c: httpx.AsyncClient, path: str, last_id: str | None = None, stop=lambda msgs: False) -> list[dict]:
    """SSE messages (event, id, data) until the server ends the stream or stop(msgs) holds."""
    msgs: list[dict] = []
    async with c.stream("GET", path, headers={"Last-Event-ID": last_id} if last_id else {}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        current: dict = {}
        async for line in r.aiter_lines():
            if line == "":
                if "event" in current:
                    msgs.append(current)
                    if stop(msgs):
                        break
                current = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                current[key] = current.get(key, "") + value.lstrip(" ")
    return msgs


async def test_the_run_stream_resumes_after_a_reconnect_and_ends_with_the_run(
    server_url: str, http: httpx.AsyncClient, settings, nats_creds: str
) -> None:
    from nexus.events.bus import Publisher, connect
    from nexus.events.payloads import RunLog, RunStatusChanged

    run = await new_run(http)
    nc = await connect(settings.nats_url, "test-ui-sse", creds=nats_creds)
    pub = Publisher(nc.jetstream(), "agent-runner")
    try:
        async with httpx.AsyncClient(base_url=server_url, timeout=30) as c:
            r = await c.post(
                "/ui/login", data={"_csrf": csrf_of((await c.get("/ui/login")).text), "key": settings.admin_key}
            )
            assert r.status_code == 303
            for i in range(3):
                await pub.publish("run.log", RunLog(message=f"line <{i}>"), run_id=run["id"])
            path = f"/ui/runs/{run['id']}/stream"
            first = await ui_stream(c, path, stop=lambda ms: len(ms) == 2)
            assert [m["event"] for m in first] == ["run-event", "run-event"]
            assert (
                "message=line &lt;0&gt;" in first[0]["data"] and 'data-type="run.log"' in first[0]["data"]
            )  # escaped HTML

            await pub.publish("run.status", RunStatusChanged(status="succeeded"), run_id=run["id"])
            await store_status(settings, run["id"], "succeeded")
            rest = await ui_stream(c, path, last_id=first[-1]["id"])  # ends by itself after the final status
            assert [m["event"] for m in rest] == ["run-event", "run-event", "run-status", "end"]
            assert "line &lt;2&gt;" in rest[0]["data"] and 'data-status="succeeded"' in rest[2]["data"]
            assert int(rest[0]["id"]) == int(first[-1]["id"]) + 1
            # What the page rendered is skipped: `after` is where the stream starts when there is no Last-Event-ID.
            tail = await ui_stream(c, f"{path}?after={rest[0]['id']}")
            assert [m["event"] for m in tail] == ["run-event", "run-status", "end"]
    finally:
        await nc.drain()


def test_the_run_page_starts_from_the_status_its_events_show() -> None:
    """The page's live stream continues after the events it shows; a run read a step behind them
    (its status stored a moment after its events) must not leave the page on the older status."""
    from nexus.core_api.ui.work import live_status

    waiting = ("run.status", {"status": "waiting_approval", "attempt": 1})
    assert live_status({"status": "queued", "attempt": 1}, [("run.log", {}), waiting]) == "waiting_approval"
    assert live_status({"status": "running", "attempt": 1}, [waiting, ("run.log", {})]) == "waiting_approval"
    # the run's own word wins when it is final, or when the events are an earlier attempt's
    assert live_status({"status": "cancelled", "attempt": 1}, [waiting]) == "cancelled"
    assert (
        live_status({"status": "queued", "attempt": 2}, [("run.status", {"status": "failed", "attempt": 1})])
        == "queued"
    )
    assert live_status({"status": "queued", "attempt": 1}, []) == "queued"

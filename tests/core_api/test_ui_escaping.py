"""Markup typed into any text a person or an agent can set — a task's title, a goal's, an agent's
description, a skill, a memory item, an approval's detail, an event's line — is shown as text on every
page that shows it, and in the fragments the run stream pushes. Every page the UI serves is walked, so
a new page showing one of them is covered without being named here."""

import re
import uuid

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from nexus.db.documents import Approval
from tests.core_api.conftest import in_app, new_agent, new_run
from tests.core_api.test_ui import jar, sign_in

pytestmark = pytest.mark.infra

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'
SHOWN = "&lt;script&gt;"
SKIPPED = re.compile(r"/(stream|login/link|static/)")  # streams never end; the link page is tests/core_api/test_ui.py


async def made(client: AsyncTestClient) -> dict[str, str]:
    """One of everything that holds free text, with EVIL in it: ids by the path parameter naming them."""
    agent = await new_agent(client, description=EVIL, system_prompt=EVIL)
    goal = (await client.post("/v1/goals", json={"title": EVIL, "description": EVIL})).json()
    run = await new_run(client, agent, title=EVIL, description=EVIL, goal_id=goal["id"])
    skill = (await client.post("/v1/skills", json={"name": f"s-{uuid.uuid4().hex[:6]}", "content": EVIL})).json()
    r = await client.post("/v1/memory", json={"scope": "agent", "scope_id": agent["id"], "content": EVIL})
    assert r.status_code == 201 and "id" in skill and "id" in goal, r.text
    approval = Approval(id=f"apr_{uuid.uuid4().hex}", run_id=run["id"], action="command", detail=EVIL)
    await in_app(client, approval.insert)
    return {
        "agent_id": agent["id"],
        "goal_id": goal["id"],
        "run_id": run["id"],
        "task_id": run["task_id"],
        "skill_id": skill["id"],
    }


def pages(app: Litestar, ids: dict[str, str]) -> list[str]:
    out = []
    for route in app.routes:
        if isinstance(route, HTTPRoute) and route.path.startswith("/ui") and "GET" in route.methods:
            if not SKIPPED.search(route.path):
                out.append(re.sub(r"\{(\w+):\w+\}", lambda m: ids[m.group(1)], route.path))
    return out


async def test_markup_in_any_text_is_shown_as_text_on_every_page(
    app: Litestar, client: AsyncTestClient, settings
) -> None:
    ids = await made(client)
    cookies = await sign_in(client, settings.admin_key)
    shown_on = []
    with jar(client, cookies) as c:
        for path in pages(app, ids):
            r = await c.get(path)
            assert r.status_code < 500, (path, r.status_code)
            assert "<script>alert" not in r.text and "<img src=x" not in r.text, path
            if SHOWN in r.text:
                shown_on.append(path)
    # The walk means something only if the text was on the pages that show it.
    for expected in ("/ui/board", f"/ui/tasks/{ids['task_id']}", f"/ui/goals/{ids['goal_id']}", "/ui/approvals"):
        assert expected in shown_on, (expected, shown_on)


def test_a_pushed_event_line_is_text(app: Litestar) -> None:
    """The run stream's fragments are rendered by the same engine: an event's line arrives escaped."""
    assert app.template_engine is not None
    html = app.template_engine.get_template("_event.html").render(e={"seq": "1", "type": EVIL, "at": "", "line": EVIL})
    assert "<script>" not in html and SHOWN in html

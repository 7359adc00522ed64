"""Concurrent `POST /v1/tasks` requests share their writes (one insert per collection per batch) and
keep each request's guarantees: a 2xx only once its task, audit entry and run are stored, ids unique,
a request's bad input refused with a 4xx naming its field while the others of its batch succeed."""

import asyncio
import dataclasses
import uuid

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pymongo.errors import AutoReconnect

from nexus.core_api.errors import PROBLEM, unstored_handler
from nexus.db import cache
from nexus.db.documents import AuditEntry, Run, Task
from nexus.db.group import GroupWriteFailed
from nexus.db.stats import COMMANDS
from nexus.core_api.settings import CoreSettings
from tests.core_api.conftest import bearer, in_app, new_agent
from tests.core_api.test_run_facts_write import Recorder

pytestmark = pytest.mark.infra


async def _post_together(app: Litestar, key: str, bodies: list[dict]) -> list[tuple[int, dict]]:
    """The requests sent at once on the app's own loop, so they really are handled concurrently (the
    test client hands its requests to the app one at a time)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://capi", headers=bearer(key)) as c:
        answers = await asyncio.gather(*(c.post("/v1/tasks", json=b) for b in bodies))
    return [(r.status_code, r.json()) for r in answers]


async def post_together(client: AsyncTestClient, app: Litestar, key: str, bodies: list[dict]) -> list[tuple[int, dict]]:
    return await in_app(client, _post_together, app, key, bodies)


def inserts(collection: str) -> float:
    return COMMANDS.labels("insert", collection, "ok")._value.get()


async def _stored_whole(task_ids: list[str]) -> None:
    """Each task, its audit entry and its run are in the database."""
    tasks = {t.id: t for t in await Task.find({"_id": {"$in": task_ids}}).to_list()}
    assert set(tasks) == set(task_ids)
    audited = {
        a.after_id for a in await AuditEntry.find({"action": "task.create", "after_id": {"$in": task_ids}}).to_list()
    }
    assert audited == set(task_ids)
    runs = {r.task_id: r for r in await Run.find({"task_id": {"$in": task_ids}}).to_list()}
    assert set(runs) == set(task_ids)
    assert all(tasks[t].current_run_id == runs[t].id for t in task_ids)


async def stored_whole(client: AsyncTestClient, task_ids: list[str]) -> None:
    await in_app(client, _stored_whole, task_ids)  # on the app's loop, where its database client lives


async def test_concurrent_requests_share_inserts_and_each_answer_follows_its_own_writes(
    client: AsyncTestClient, app: Litestar, settings: CoreSettings
) -> None:
    agent = await new_agent(client)
    before = {c: inserts(c) for c in ("tasks", "audit_entries", "runs")}
    answers = await post_together(
        client, app, settings.admin_key, [{"title": f"batch {i}", "assignee": agent["id"]} for i in range(24)]
    )
    assert [code for code, _ in answers] == [201] * 24, answers
    bodies = [body for _, body in answers]
    assert len({b["id"] for b in bodies}) == 24 and len({b["current_run_id"] for b in bodies}) == 24
    assert sorted(b["title"] for b in bodies) == sorted(f"batch {i}" for i in range(24))
    await stored_whole(client, [b["id"] for b in bodies])
    # Each collection's documents went out in fewer commands than requests (one each without batching).
    for collection, n in before.items():
        assert inserts(collection) - n < 24, collection


async def test_a_bad_request_in_a_batch_is_refused_alone(
    client: AsyncTestClient, app: Litestar, settings: CoreSettings
) -> None:
    agent = await new_agent(client)
    ghost = f"ghost-{uuid.uuid4().hex[:6]}"
    bodies = [{"title": f"good {i}", "assignee": agent["id"]} for i in range(12)]
    bodies.insert(4, {"title": "bad assignee", "assignee": ghost})
    bodies.insert(9, {"title": "bad blocker", "assignee": agent["id"], "blocked_by": ["task_missing"]})
    bodies.insert(11, {"title": 7, "assignee": agent["id"]})
    answers = await post_together(client, app, settings.admin_key, bodies)
    refused = {i: (code, body) for i, (code, body) in enumerate(answers) if code != 201}
    assert sorted(refused) == [4, 9, 11], answers
    for i, field in ((4, "assignee"), (9, "blocked_by"), (11, "title")):
        code, body = refused[i]
        assert code == 422 and body["status"] == 422, body
        assert field in [e["field"] for e in body["errors"]], body
    good = [body["id"] for code, body in answers if code == 201]
    assert len(good) == 12
    await stored_whole(client, good)


def test_a_batch_the_database_lost_answers_503_naming_no_other_request() -> None:
    lost = GroupWriteFailed("tasks", 3, AutoReconnect("connection closed: {'title': 'someone else's task'}"))
    response = unstored_handler(_Request(), lost)  # type: ignore[arg-type]  # only method and path are read
    assert response.status_code == 503 and response.media_type == PROBLEM
    body = msgspec.json.decode(response.render(response.content, response.media_type))
    assert body["status"] == 503 and "tasks" in body["detail"]
    assert "someone else" not in body["detail"]


class _Request:
    method = "POST"

    class url:
        path = "/v1/tasks"


async def test_a_task_that_runs_at_once_is_one_write_with_the_events_of_created_then_claimed(
    client: AsyncTestClient, app: Litestar
) -> None:
    agent = await new_agent(client)
    recorder = Recorder(app.state.ctx.publisher)
    ctx = app.state.ctx
    app.state.ctx = dataclasses.replace(ctx, publisher=recorder)
    writes = (inserts("tasks"), COMMANDS.labels("update", "tasks", "ok")._value.get())
    try:
        r = await client.post("/v1/tasks", json={"title": "at once", "assignee": agent["id"]})
    finally:
        app.state.ctx = ctx
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["status"] == "in_progress" and task["current_run_id"]
    assert (inserts("tasks") - writes[0], COMMANDS.labels("update", "tasks", "ok")._value.get() - writes[1]) == (1, 0)
    # What the board and the feed hear is what they heard when the claim was a second write.
    told = [(t, getattr(d, "status", None)) for t, d in recorder.sent if getattr(d, "task_id", None) == task["id"]]
    assert told == [
        ("task.created", "ready"),
        ("board.card_moved", None),
        ("task.status_changed", "in_progress"),
        ("run.queued", "queued"),
    ], told
    assert recorder.sent[1][1].column == "ready"
    assert (await client.get(f"/v1/tasks/{task['id']}")).json() == task
    run = (await client.get(f"/v1/runs/{task['current_run_id']}")).json()
    assert run["task_id"] == task["id"] and run["status"] == "queued"


@pytest.fixture
def lasting_cache():
    """The read cache's entries outlive the test however slow the box (only a write drops them)."""
    ttl = cache._cache.ttl_s
    cache._cache.ttl_s = 3600.0
    yield
    cache._cache.ttl_s = ttl


async def test_an_agent_named_by_name_is_read_once_until_agents_change(client: AsyncTestClient, lasting_cache) -> None:
    agent = await new_agent(client)
    r = await client.post("/v1/tasks", json={"title": "first", "assignee": agent["name"]})
    assert r.status_code == 201, r.text
    finds = COMMANDS.labels("find", "agents", "ok")._value.get()
    for i in range(3):
        r = await client.post("/v1/tasks", json={"title": f"again {i}", "assignee": agent["name"]})
        assert r.status_code == 201 and r.json()["assignee_agent_id"] == agent["id"], r.text
    assert COMMANDS.labels("find", "agents", "ok")._value.get() == finds
    # A write to agents forgets what was remembered missing: an agent made now is found by its name.
    later = await new_agent(client)
    r = await client.post("/v1/tasks", json={"title": "later", "assignee": later["name"]})
    assert r.status_code == 201 and r.json()["assignee_agent_id"] == later["id"], r.text


async def test_a_tasks_run_and_its_audit_entry_are_written_at_once(
    client: AsyncTestClient, app: Litestar, monkeypatch
) -> None:
    """The run's store waits for the audit entry's write to start: written one after the other, it never
    would, and the request would fail."""
    from nexus.core_api.tasks import routes
    from nexus.core_api.workflow import launch

    agent = await new_agent(client)
    audit_started = asyncio.Event()
    real_record, real_store = routes.record, launch.store

    async def record(*args, **kwargs):
        audit_started.set()
        return await real_record(*args, **kwargs)

    async def store(prepared):
        await asyncio.wait_for(audit_started.wait(), 10)
        return await real_store(prepared)

    monkeypatch.setattr(routes, "record", record)
    monkeypatch.setattr(launch, "store", store)
    r = await client.post("/v1/tasks", json={"title": "run and audit at once", "assignee": agent["id"]})
    assert r.status_code == 201, r.text
    await stored_whole(client, [r.json()["id"]])

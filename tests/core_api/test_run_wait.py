"""`GET /v1/runs/{id}?wait_s=N`: a client learns a run's end in one request, answered the moment the run's
end is stored (its task moved), or as the run is when the wait is over (real FerretDB and NATS)."""

import asyncio
import uuid

import pytest
from pymongo import AsyncMongoClient

from nexus.core_api.runs.ingest import ingest_group
from nexus.core_api.workflow.waiting import when_ended as _when_ended
from nexus.core_api.workflow import ends
from nexus.db.documents import Run
from nexus.events import payloads as p
from nexus.events.bus import Publisher, connect
from tests.core_api.conftest import assert_problem, in_app, new_agent, new_run, store_status
from tests.core_api.test_announce_after_store import delivery

pytestmark = pytest.mark.infra


async def _waiting(run_id: str) -> None:
    """Until a request waits for the run's end (the app runs in this process, on its own loop)."""
    for _ in range(2000):
        if run_id in ends._waiting:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"no request waited for {run_id}")


async def test_a_waiting_read_answers_once_the_runs_end_is_stored(client, app) -> None:
    """The wait as the route makes it, on the app's own loop (the test client would hold this loop)."""
    run = await new_run(client)
    stored = await in_app(client, Run.get, run["id"])
    waiting = asyncio.create_task(in_app(client, _when_ended, stored, 30.0))
    await _waiting(run["id"])
    assert not waiting.done()
    events = [
        delivery(run["id"], "run.status", p.RunStatusChanged(status="running"), 1),
        delivery(run["id"], "run.status", p.RunStatusChanged(status="succeeded", summary="done"), 2),
    ]
    await in_app(client, ingest_group, app.state.ctx, events)
    ended = await waiting
    assert ended.status == "succeeded" and ended.summary == "done"
    # Answered once the end was carried out: its task has moved by then.
    assert (await client.get(f"/v1/tasks/{run['task_id']}")).json()["status"] == "done"
    assert run["id"] not in ends._waiting  # nothing left behind


async def test_a_run_ended_by_another_core_api_is_seen_in_the_database(client, http, settings) -> None:
    """Over HTTP to a second process sharing the database: the end it did not store, it reads."""
    run = await new_run(client)
    waiting = asyncio.create_task(http.get(f"/v1/runs/{run['id']}", params={"wait_s": 30, "config": "false"}))
    await asyncio.sleep(0.3)  # most likely waiting by now; if not, it finds the run ended at once
    await store_status(settings, run["id"], "failed")
    r = await waiting
    assert r.status_code == 200 and r.json()["status"] == "failed"


async def test_a_wait_that_runs_out_answers_the_run_as_it_is(client) -> None:
    run = await new_run(client)
    r = await client.get(f"/v1/runs/{run['id']}", params={"wait_s": 0.2})
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert run["id"] not in ends._waiting


async def test_an_ended_run_is_answered_at_once_and_a_bad_wait_is_refused_by_name(client, settings) -> None:
    run = await new_run(client)
    await store_status(settings, run["id"], "cancelled")
    r = await client.get(f"/v1/runs/{run['id']}", params={"wait_s": 60})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    for bad in ("-1", "61", "soon", "nan"):
        assert_problem(await client.get(f"/v1/runs/{run['id']}", params={"wait_s": bad}), 422, "wait_s")
    assert_problem(await client.get("/v1/runs/run_nothing_like_it", params={"wait_s": 1}), 404)


async def test_a_task_created_with_a_wait_is_answered_once_its_run_ended(client, http, settings) -> None:
    """`POST /v1/tasks?wait_s=N`: one request from the task to its run's end (here the end is stored by
    another process: this test, writing as a second core-api would)."""
    agent = await new_agent(client)
    title = f"waited for {uuid.uuid4().hex[:8]}"
    creating = asyncio.create_task(
        http.post("/v1/tasks", params={"wait_s": 30}, json={"title": title, "assignee": agent["id"]})
    )
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
    try:
        db = mongo[settings.mongodb_db]
        for _ in range(2000):  # the task and its run, both stored (they are written one after the other)
            task = await db["tasks"].find_one({"title": title, "current_run_id": {"$ne": None}})
            if task is not None and await db["runs"].find_one({"_id": task["current_run_id"]}) is not None:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the task and its run were never stored")
        assert not creating.done()  # its run has not ended: the request waits
        await db["tasks"].update_one({"_id": task["_id"]}, {"$set": {"status": "done"}})
        await db["runs"].update_one({"_id": task["current_run_id"]}, {"$set": {"status": "succeeded"}})
    finally:
        await mongo.close()
    r = await creating
    assert r.status_code == 201, r.text
    assert r.json()["id"] == task["_id"] and r.json()["status"] == "done"
    # Without a wait, or with a bad one: as before, or refused by name.
    assert (await http.post("/v1/tasks", json={"title": title, "assignee": agent["id"]})).json()[
        "status"
    ] == "in_progress"
    bad = await http.post("/v1/tasks", params={"wait_s": "61"}, json={"title": title, "assignee": agent["id"]})
    assert_problem(bad, 422, "wait_s")


async def test_an_end_another_core_api_announces_is_heard(client, nats_url, nats_creds) -> None:
    """The end stored and announced by another core-api (this test, as one would): this process hears it,
    so what waits for the run is woken without reading the database."""
    run = await new_run(client)
    assert not ends.known_ended(run["id"])
    nc = await connect(nats_url, "test-run-wait", creds=nats_creds)
    try:
        await Publisher(nc.jetstream(), "test").publish(
            "run.succeeded",
            p.RunChanged(run_id=run["id"], task_id=run["task_id"], agent_id=run["agent_id"], status="succeeded"),
            correlation_id=run["id"],
        )
    finally:
        await nc.close()
    for _ in range(2000):
        if ends.known_ended(run["id"]):
            break
        await asyncio.sleep(0.005)
    assert ends.known_ended(run["id"])

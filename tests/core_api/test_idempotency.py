"""`Idempotency-Key` on creates: a task or goal asked for again — its answer lost, its core-api killed
mid-request, or asked twice at once — is made once; the same key with another body is refused by name."""

import asyncio

import pytest

from nexus.core_api import idempotency
from nexus.core_api.goals.schemas import GoalCreate
from nexus.core_api.tasks.schemas import TaskCreate
from nexus.core_api.workflow import engine, launch
from nexus.db.documents import Goal, Task
from tests.core_api.conftest import assert_problem, in_app, new_agent, new_key

pytestmark = pytest.mark.infra

KEY = "Idempotency-Key"


async def _tasks_titled(client, title: str) -> list[dict]:
    items = (await client.get("/v1/tasks", params={"limit": 200})).json()["items"]
    return [t for t in items if t["title"] == title]


async def _caller(client, agent: dict) -> str:
    """The key id requests of this client act as (what a task records as its creator)."""
    r = await client.post("/v1/tasks", json={"title": "whoami", "assignee": agent["id"]})
    return (await in_app(client, Task.get, r.json()["id"])).created_by


async def test_the_same_key_and_body_make_one_task_and_one_run(client) -> None:
    agent = await new_agent(client)
    body = {"title": "once only", "assignee": agent["id"]}
    first = await client.post("/v1/tasks", json=body, headers={KEY: "req-1"})
    again = await client.post("/v1/tasks", json=body, headers={KEY: "req-1"})
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["current_run_id"] == first.json()["current_run_id"]
    assert len(await _tasks_titled(client, "once only")) == 1
    runs = (await client.get("/v1/runs", params={"task_id": first.json()["id"]})).json()["items"]
    assert [r["id"] for r in runs if r["task_id"] == first.json()["id"]] == [first.json()["current_run_id"]]
    other = await client.post("/v1/tasks", json=body, headers={KEY: "req-2"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    plain = [await client.post("/v1/tasks", json=body) for _ in range(2)]  # no key: each is a new task
    assert len({r.json()["id"] for r in plain}) == 2
    assert len(await _tasks_titled(client, "once only")) == 4
    lead = {"Authorization": f"Bearer {await new_key(client, 'lead')}"}  # keys are each caller's own
    theirs = await client.post("/v1/tasks", json=body, headers={KEY: "req-1", **lead})
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]


async def test_the_same_key_with_another_body_is_refused_by_name(client) -> None:
    agent = await new_agent(client)
    r = await client.post("/v1/tasks", json={"title": "a", "assignee": agent["id"]}, headers={KEY: "reused"})
    assert r.status_code == 201
    r = await client.post("/v1/tasks", json={"title": "b", "assignee": agent["id"]}, headers={KEY: "reused"})
    assert_problem(r, 422, KEY)
    assert await _tasks_titled(client, "b") == []


@pytest.mark.parametrize("bad", [b"", b"has space", b"x" * 201, "naïve".encode()])
async def test_a_malformed_key_is_refused_by_name(client, bad: bytes) -> None:
    agent = await new_agent(client)
    title = f"malformed {len(bad)}"
    r = await client.post("/v1/tasks", json={"title": title, "assignee": agent["id"]}, headers={KEY: bad})
    body = assert_problem(r, 422)
    assert [e["field"] for e in body["errors"]] == [KEY], body
    assert await _tasks_titled(client, title) == []


async def test_asked_twice_at_once_it_is_made_once(client, app) -> None:
    """Two requests with one key, both past the key before either stored the task: one insert wins,
    the other answers with what it stored."""
    agent = await new_agent(client)
    body = TaskCreate(title="raced", assignee=agent["id"])
    key_id = await _caller(client, agent)
    await in_app(client, idempotency.claim, key_id, "task", "race", body, "task")  # a first request, then it died

    async def audit(task: Task) -> None:
        return None

    async def twice() -> list[str]:
        made = await asyncio.gather(
            *(engine.submit_task_once(app.state.ctx, body, "race", actor=key_id, audit=audit) for _ in range(3))
        )
        return [t.id for t in made]

    assert len(set(await in_app(client, twice))) == 1
    assert len(await _tasks_titled(client, "raced")) == 1


async def test_a_request_whose_core_api_died_before_storing_the_task_is_made_by_its_retry(client, app) -> None:
    """The key was stored, then core-api died: the retry makes the task under the id the first chose."""
    agent = await new_agent(client)
    body = {"title": "died early", "assignee": agent["id"]}
    key_id = await _caller(client, agent)
    got = await in_app(client, idempotency.claim, key_id, "task", "early", TaskCreate(**body), "task")
    assert got.first
    r = await client.post("/v1/tasks", json=body, headers={KEY: "early"})
    assert r.status_code == 201 and r.json()["id"] == got.resource_id and r.json()["current_run_id"], r.text


async def test_a_request_whose_core_api_died_after_storing_the_task_answers_it_on_retry(
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = await new_agent(client)
    body = {"title": "died late", "assignee": agent["id"]}
    store = launch.store

    async def killed(*args, **kwargs):
        raise RuntimeError("core-api killed after storing the task")

    monkeypatch.setattr(launch, "store", killed)
    r = await client.post("/v1/tasks", json=body, headers={KEY: "late"})
    assert r.status_code == 500
    monkeypatch.setattr(launch, "store", store)
    again = await client.post("/v1/tasks", json=body, headers={KEY: "late"})
    assert again.status_code == 201, again.text
    assert [t["id"] for t in await _tasks_titled(client, "died late")] == [again.json()["id"]]


async def test_a_goal_asked_again_is_made_once_and_planned(client, app) -> None:
    meta = await new_agent(client)
    body = {"title": "one goal", "meta_agent": meta["name"]}
    first = await client.post("/v1/goals", json=body, headers={KEY: "g-1"})
    again = await client.post("/v1/goals", json=body, headers={KEY: "g-1"})
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"] and again.json()["meta_run_id"] == first.json()["meta_run_id"]
    tasks = (await client.get(f"/v1/goals/{first.json()['id']}/tasks")).json()["items"]
    assert len(tasks) == 1
    assert_problem(await client.post("/v1/goals", json={**body, "title": "other"}, headers={KEY: "g-1"}), 422, KEY)

    # core-api died after storing the goal, before its planning task: the retry plans it at once
    key_id = await _caller(client, meta)
    half = {"title": "half made", "meta_agent": meta["name"]}
    got = await in_app(client, idempotency.claim, key_id, "goal", "g-2", GoalCreate(**half), "goal")
    await in_app(client, Goal(id=got.resource_id, title="half made", meta_agent_id=meta["id"]).insert)
    r = await client.post("/v1/goals", json=half, headers={KEY: "g-2"})
    assert r.status_code == 201 and r.json()["id"] == got.resource_id and r.json()["meta_run_id"], r.text
    planned = (await client.get(f"/v1/goals/{got.resource_id}/tasks")).json()["items"]
    assert len(planned) == 1 and (await in_app(client, Task.get, planned[0]["id"])).is_meta

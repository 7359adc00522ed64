"""Goals (with a meta session) and memory items (scopes, TTL, the preview a run would get)."""

import pytest

from tests.core_api.conftest import assert_problem, new_agent

pytestmark = pytest.mark.infra


async def test_goal_with_meta_agent_starts_a_meta_session(client) -> None:
    meta = await new_agent(client)
    r = await client.post(
        "/v1/goals", json={"title": "Ship login", "description": "a page", "meta_agent": meta["name"]}
    )
    assert r.status_code == 201, r.text
    goal = r.json()
    assert goal["meta_agent_id"] == meta["id"] and goal["meta_run_id"], goal
    assert (await client.get(f"/v1/goals/{goal['id']}")).json() == goal

    run = (await client.get(f"/v1/runs/{goal['meta_run_id']}")).json()
    assert run["goal_id"] == goal["id"] and run["parent_session_id"] is None and run["config"]["meta"] is True
    tasks = (await client.get(f"/v1/goals/{goal['id']}/tasks")).json()
    assert [t["id"] for t in tasks["items"]] == [run["task_id"]]
    assert (await client.get(f"/v1/goals/{goal['id']}/tasks", params={"status": "done"})).json()["items"] == []


async def test_goal_without_meta_agent_and_validation(client) -> None:
    r = await client.post("/v1/goals", json={"title": "Plain"})
    assert r.status_code == 201 and r.json()["meta_run_id"] is None
    assert_problem(await client.post("/v1/goals", json={"title": "x", "meta_agent": "nobody"}), 422, "meta_agent")
    assert_problem(await client.post("/v1/goals", json={"title": ""}), 422, "title")
    assert_problem(await client.post("/v1/goals", json={"title": "x", "colour": "red"}), 422, "colour")
    assert_problem(await client.get("/v1/goals/goal_missing"), 404)


async def test_memory_crud_scopes_and_ttl(client) -> None:
    agent = await new_agent(client)
    r = await client.post(
        "/v1/memory",
        json={
            "scope": "agent",
            "scope_id": agent["name"],
            "content": "use pytest",
            "tags": ["testing"],
            "source": "review",
        },
    )
    assert r.status_code == 201, r.text
    item = r.json()
    assert item["scope_id"] == agent["id"] and item["expires_at"] is None and item["tags"] == ["testing"]
    body = assert_problem(await client.post("/v1/memory", json={"scope": "agent", "content": "x"}), 422, "scope_id")
    assert body["detail"] == "an agent memory item needs the agent's id or name"  # it read "a agent"
    assert_problem(
        await client.post("/v1/memory", json={"scope": "global", "scope_id": agent["id"], "content": "x"}),
        422,
        "scope_id",
    )
    assert_problem(await client.post("/v1/memory", json={"scope": "team", "content": "x"}), 422, "scope")
    assert_problem(await client.post("/v1/memory", json={"scope": "global", "content": "x", "ttl_s": -1}), 422, "ttl_s")

    r = await client.patch(f"/v1/memory/{item['id']}", json={"content": "use pytest -q", "ttl_s": 3600})
    assert r.status_code == 200 and r.json()["content"] == "use pytest -q" and r.json()["expires_at"]
    listed = (await client.get("/v1/memory", params={"scope": "agent", "scope_id": agent["id"]})).json()["items"]
    assert [m["id"] for m in listed] == [item["id"]]
    assert (await client.get("/v1/memory", params={"tag": "testing", "source": "review"})).json()["items"][0][
        "id"
    ] == item["id"]

    assert (await client.delete(f"/v1/memory/{item['id']}")).status_code == 204
    assert_problem(await client.get(f"/v1/memory/{item['id']}"), 404)


async def test_memory_preview_is_what_a_run_gets(client) -> None:
    agent = await new_agent(client, memory_policy={"scopes": ["agent", "global"], "max_items": 2, "max_chars": 1000})
    other = await new_agent(client)
    for body in (
        {"scope": "agent", "scope_id": agent["id"], "content": "deploy with the blue green script"},
        {"scope": "agent", "scope_id": agent["id"], "content": "the database is FerretDB"},
        {"scope": "global", "content": "deploy only on weekdays"},
        {"scope": "agent", "scope_id": other["id"], "content": "deploy secrets live elsewhere"},
        {"scope": "agent", "scope_id": agent["id"], "content": "deploy expired advice", "ttl_s": 1},
    ):
        assert (await client.post("/v1/memory", json=body)).status_code == 201
    # TTL: the expired item disappears from the default list and from what runs get.
    await _wait_expired(client, agent["id"])

    r = await client.get(f"/v1/agents/{agent['name']}/memory/preview", params={"query": "how do I deploy"})
    assert r.status_code == 200, r.text
    preview = r.json()
    contents = [m["content"] for m in preview["items"]]
    assert len(contents) == 2 and set(contents) == {"deploy with the blue green script", "deploy only on weekdays"}, (
        contents
    )
    assert preview["total_chars"] == sum(map(len, contents)) and preview["agent_revision"] == 1

    run_r = await client.post("/v1/tasks", json={"title": "how do I deploy", "assignee": agent["id"]})
    run = (await client.get(f"/v1/runs/{run_r.json()['current_run_id']}")).json()
    assert run["config"]["memory"] == contents


async def _wait_expired(client, agent_id: str) -> None:
    import asyncio

    for _ in range(100):
        live = (await client.get("/v1/memory", params={"scope_id": agent_id})).json()["items"]
        if all(m["content"] != "deploy expired advice" for m in live):
            every = (await client.get("/v1/memory", params={"scope_id": agent_id, "include_expired": True})).json()[
                "items"
            ]
            assert any(m["content"] == "deploy expired advice" for m in every)
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the item with a 1 s TTL never expired")

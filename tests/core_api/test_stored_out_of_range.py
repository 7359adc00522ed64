"""An agent document an older version stored, whose numbers are past the ranges the API now enforces
(no range existed then), still reads, lists, previews its memory, runs and can be saved again: each such
number is read as its range's nearest end. A run config stored with one is relaunched the same way."""

import uuid

import pytest
from litestar.testing import AsyncTestClient
from pymongo import AsyncMongoClient

from nexus.core_api.workflow.launch import stored_config
from nexus.domain.agents import DAY_S, MAX_TOKENS
from tests.core_api.conftest import in_app, new_run

pytestmark = pytest.mark.infra

PAST = {
    "limits": {"max_steps": -5, "max_tokens": 10**18, "wall_clock_s": 10**18, "max_cost_usd": -3.0},
    "memory_policy": {"max_items": -1, "max_chars": 10**18},
    "permissions": {"commands": {"timeout_s": 0, "max_output_bytes": -1}},
    "llm": {"temperature": 9.5},
}
NEAREST = {
    "limits": {"max_steps": 1, "max_tokens": MAX_TOKENS, "wall_clock_s": 7 * DAY_S, "max_cost_usd": 0.0},
    "memory_policy": {"max_items": 0, "max_chars": 200_000},
    "commands": {"timeout_s": 0.1, "max_output_bytes": 256},
    "temperature": 2.0,
}


async def _raw(settings, collection: str, doc: dict) -> None:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
    try:
        await client[settings.mongodb_db][collection].insert_one(doc)
    finally:
        await client.close()


def _nearest(spec: dict) -> None:
    """An agent document's or a run config's numbers, each at its range's nearest end."""
    assert spec["limits"] == NEAREST["limits"], spec["limits"]
    if "memory_policy" in spec:  # the agent's (a run config carries the memory chosen, not the policy)
        assert {k: spec["memory_policy"][k] for k in ("max_items", "max_chars")} == NEAREST["memory_policy"]
    assert {k: spec["permissions"]["commands"][k] for k in ("timeout_s", "max_output_bytes")} == NEAREST["commands"]
    assert spec["llm"]["temperature"] == NEAREST["temperature"]


async def test_an_agent_stored_past_the_ranges_reads_runs_and_saves(client: AsyncTestClient, settings) -> None:
    agent_id, name = f"agt_old{uuid.uuid4().hex[:12]}", f"old-{uuid.uuid4().hex[:8]}"
    spec = {"name": name, "system_prompt": "You help.", **PAST}
    await _raw(settings, "agents", {"_id": agent_id, "name": name, "revision": 1, "spec": spec, "deleted": False})
    await _raw(
        settings, "agent_revisions", {"_id": f"{agent_id}@000001", "agent_id": agent_id, "revision": 1, "spec": spec}
    )

    r = await client.get(f"/v1/agents/{agent_id}")
    assert r.status_code == 200, r.text
    _nearest(r.json()["spec"])
    r = await client.get("/v1/agents", params={"limit": 500})
    assert r.status_code == 200 and agent_id in {a["id"] for a in r.json()["items"]}, r.text
    r = await client.get(f"/v1/agents/{agent_id}/revisions/1")
    assert r.status_code == 200, r.text
    r = await client.get(f"/v1/agents/{agent_id}/memory/preview", params={"query": "anything"})
    assert r.status_code == 200, r.text

    run = await new_run(client, {"id": agent_id})
    _nearest(run["config"])  # what the worker is sent is within the ranges

    saved = (await client.get(f"/v1/agents/{agent_id}")).json()["spec"]
    r = await client.put(f"/v1/agents/{agent_id}", json=saved)  # the document as read is valid as written
    assert r.status_code == 200, r.text


async def test_a_run_config_stored_past_the_ranges_is_relaunched_within_them(client: AsyncTestClient, settings) -> None:
    config = (await new_run(client))["config"]
    run_id = f"run_old{uuid.uuid4().hex[:12]}"
    old = {**config, "run_id": run_id, "limits": PAST["limits"]}
    old["permissions"] = {
        **config["permissions"],
        "commands": {**config["permissions"]["commands"], **PAST["permissions"]["commands"]},
    }
    old["llm"] = {**config["llm"], **PAST["llm"]}
    await _raw(settings, "run_configs", {"_id": run_id, "config": old})

    relaunched = await in_app(client, stored_config, run_id)
    assert relaunched.limits.wall_clock_s == 7 * DAY_S and relaunched.limits.max_steps == 1
    assert relaunched.permissions.commands.timeout_s == 0.1 and relaunched.llm.temperature == 2.0

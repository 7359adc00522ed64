"""Goals and budgets through the real services (core-api, worker, runners as processes, NATS,
FerretDB): a goal planned by its meta session goes open → planning → in_progress → done with a
report; a failing child fails it; cancelling it cancels its running runs; a goal's budget is split
among its children and the one that overspends is stopped before its next model call, its work so
far on its branch; an agent's daily cap holds the next dispatch until a lead raises it. The scripted
provider reports tokens for every call (about four characters a token), so all of it is deterministic."""

import asyncio
import json

import httpx
import msgspec
import pytest

from nexus.domain.ids import new_id
from nexus.events.bus import Publisher, connect
from nexus.events.catalog import EVENTS_STREAM
from nexus.events.payloads import CreateGoal
from tests.e2e.conftest import git, wait_for
from tests.e2e.test_first_run import read_sse

pytestmark = [pytest.mark.e2e, pytest.mark.infra]

FINAL = ("succeeded", "failed", "cancelled", "timed_out")
TOOLS = ["spawn_child", "write_file", "note", "finish", "git_commit", "run_command"]


def planner(*children: tuple[str, str]) -> str:
    """A meta session's script: one spawn_child per (file, agent), then finish."""
    calls = "".join(f"      - {{name: spawn_child, args: {{title: 'Write {f}', target_files: [{f}], agent: {a}}}}}\n" for f, a in children)
    return f"steps:\n  - say: planning\n    tool_calls:\n{calls}  - tool_calls: [{{name: finish, args: {{summary: planned}}}}]\n"


WRITER = """
steps:
  - tool_calls: [{name: write_file, args: {path: "{{target_file}}", content: "SESSION_ID={{session_id}}\\n"}}]
  - tool_calls: [{name: finish, args: {summary: "wrote {{target_file}}"}}]
"""


async def agent(api: httpx.AsyncClient, name: str, script: str, **spec) -> dict:
    r = await api.post("/v1/agents", json={
        "name": name, "system_prompt": f"You are {name}.", "tools": TOOLS,
        "permissions": {"can_commit": True, "can_merge": False, **spec.pop("permissions", {})},
        "llm": {"provider": "scripted", "script": script}, **spec,
    })
    assert r.status_code == 201, r.text
    return r.json()


async def repository(api: httpx.AsyncClient, bare_repo) -> None:
    r = await api.post("/v1/repositories", json={"name": "demo", "url": str(bare_repo), "default_branch": "main"})
    assert r.status_code == 201, r.text


async def until_found(api: httpx.AsyncClient, path: str, attempts: int = 600) -> dict:
    """Poll until the resource exists (a command over the bus is applied by core-api's consumer)."""
    for _ in range(attempts):
        r = await api.get(path)
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 404, r.text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


async def goal_ended(api: httpx.AsyncClient, goal_id: str) -> dict:
    """The goal once it ended and its report is stored."""
    return await wait_for(api, f"/v1/goals/{goal_id}", lambda g: g["report"] is not None, attempts=1800)


async def test_goal_created_over_nats_is_planned_worked_and_reported(api: httpx.AsyncClient, stack, bare_repo) -> None:
    await agent(api, "planner", planner(("a.txt", "writer"), ("b.txt", "writer"), ("c.txt", "writer")))
    await agent(api, "writer", WRITER)
    await repository(api, bare_repo)
    # Costs are real numbers: the scripted model gets a price in the list admins edit.
    r = await api.put("/v1/prices/scripted", json={"input_per_mtok": 2.0, "output_per_mtok": 8.0})
    assert r.status_code == 200, r.text

    # The Telegram gateway's way in: core.create_goal over NATS, naming the planner and the repository.
    goal_id = new_id("goal")
    nc = await connect(stack.nats_url, "test-goals", creds=stack.creds("tools"))
    try:
        await Publisher(nc.jetstream(), "test").publish("core.create_goal", CreateGoal(
            title="Three files", description="a, b and c", goal_id=goal_id, meta_agent="planner", repository="demo",
            requested_by="lead@example.com"))
    finally:
        await nc.drain()
    goal = await until_found(api, f"/v1/goals/{goal_id}")
    meta_agent = (await api.get("/v1/agents/planner")).json()
    assert goal["meta_agent_id"] == meta_agent["id"] and goal["repository_id"] and goal["created_by"] == "lead@example.com", goal

    # Its feed streams the goal's progress and ends with its report.
    feed = await read_sse(api, f"/v1/goals/{goal_id}/events")
    events = [(e["event"], json.loads(e["data"])["data"]) for e in feed]
    moves = [d["status"] for t, d in events if t == "goal.status_changed"]
    assert moves == ["planning", "in_progress", "done"], events
    assert events[-1][0] == "goal.reported" and sum(t == "task.created" for t, _ in events) == 3, events

    goal = (await api.get(f"/v1/goals/{goal_id}")).json()
    assert goal["status"] == "done" and goal["status_reason"] == "every child task done (3)", goal
    assert goal["progress"] == {"total": 3, "by_status": {"done": 3}}
    assert goal["meta"]["run_status"] == "succeeded" and goal["meta"]["task_status"] == "done"
    assert goal["usage"]["tokens"] > 0 and goal["usage"]["cost_usd"] > 0, goal["usage"]
    assert goal["usage"]["tokens"] == goal["meta"]["tokens"] + sum(c["tokens"] for c in goal["children"])
    report = goal["report"]
    assert report["status"] == "done" and report["duration_s"] > 0 and report["cost_usd"] == goal["usage"]["cost_usd"], report
    assert sorted(c["summary"] for c in report["children"]) == ["wrote a.txt", "wrote b.txt", "wrote c.txt"]
    for child in report["children"]:
        run = (await api.get(f"/v1/runs/{child['run_id']}")).json()
        assert child["branch"] == run["branch"] and child["commit_sha"] == run["commit_sha"] and child["ledger_hash"] == run["ledger_hash"]
        assert git(bare_repo, "rev-parse", child["branch"]) == child["commit_sha"]  # the work is on its branch
        assert child["cost_usd"] > 0 and child["tokens"] > 0
    print("TOKENS", json.dumps({"meta": goal["meta"]["tokens"], "children": [c["tokens"] for c in goal["children"]]}))

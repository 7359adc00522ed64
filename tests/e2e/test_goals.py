"""Goals and budgets through the real services (core-api, worker, runners as processes, NATS,
FerretDB): a goal planned by its meta session goes open → planning → in_progress → done with a
report; a failing child fails it; cancelling it cancels its running runs; a goal's budget is split
among its children and the one that overspends is stopped before its next model call, its work so
far on its branch; an agent's daily cap holds the next dispatch until a lead raises it. The scripted
provider reports tokens for every call (about four characters a token), so all of it is deterministic."""

import asyncio
import json
import re

import httpx
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
    calls = "".join(
        f"      - {{name: spawn_child, args: {{title: 'Write {f}', target_files: [{f}], agent: {a}}}}}\n"
        for f, a in children
    )
    return f"steps:\n  - say: planning\n    tool_calls:\n{calls}  - tool_calls: [{{name: finish, args: {{summary: planned}}}}]\n"


WRITER = """
steps:
  - tool_calls: [{name: write_file, args: {path: "{{target_file}}", content: "SESSION_ID={{session_id}}\\n"}}]
  - tool_calls: [{name: finish, args: {summary: "wrote {{target_file}}"}}]
"""


async def agent(api: httpx.AsyncClient, name: str, script: str, **spec) -> dict:
    r = await api.post(
        "/v1/agents",
        json={
            "name": name,
            "system_prompt": f"You are {name}.",
            "tools": TOOLS,
            "permissions": {"can_commit": True, "can_merge": False, **spec.pop("permissions", {})},
            "llm": {"provider": "scripted", "script": script},
            **spec,
        },
    )
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
        await Publisher(nc.jetstream(), "test").publish(
            "core.create_goal",
            CreateGoal(
                title="Three files",
                description="a, b and c",
                goal_id=goal_id,
                meta_agent="planner",
                repository="demo",
                requested_by="lead@example.com",
            ),
        )
    finally:
        await nc.drain()
    goal = await until_found(api, f"/v1/goals/{goal_id}")
    meta_agent = (await api.get("/v1/agents/planner")).json()
    assert (
        goal["meta_agent_id"] == meta_agent["id"] and goal["repository_id"] and goal["created_by"] == "lead@example.com"
    ), goal

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
    assert (
        report["status"] == "done" and report["duration_s"] > 0 and report["cost_usd"] == goal["usage"]["cost_usd"]
    ), report
    assert sorted(c["summary"] for c in report["children"]) == ["wrote a.txt", "wrote b.txt", "wrote c.txt"]
    for child in report["children"]:
        run = (await api.get(f"/v1/runs/{child['run_id']}")).json()
        assert (
            child["branch"] == run["branch"]
            and child["commit_sha"] == run["commit_sha"]
            and child["ledger_hash"] == run["ledger_hash"]
        )
        assert git(bare_repo, "rev-parse", child["branch"]) == child["commit_sha"]  # the work is on its branch
        assert child["cost_usd"] > 0 and child["tokens"] > 0
    print("TOKENS", json.dumps({"meta": goal["meta"]["tokens"], "children": [c["tokens"] for c in goal["children"]]}))


FAILER = """
steps:
  - tool_calls: [{name: note, args: {message: "trying"}}]
  - tool_calls: [{name: note, args: {message: "still trying"}}]
  - tool_calls: [{name: finish, args: {summary: "never"}}]
"""


async def test_a_child_failing_fails_the_goal(api: httpx.AsyncClient, bare_repo) -> None:
    await agent(api, "planner", planner(("a.txt", "writer"), ("b.txt", "failer")))
    await agent(api, "writer", WRITER)
    await agent(api, "failer", FAILER, limits={"max_steps": 1})  # its verdict: failed, no retry changes that
    await repository(api, bare_repo)
    goal = (
        await api.post("/v1/goals", json={"title": "One fails", "meta_agent": "planner", "repository": "demo"})
    ).json()
    goal = await goal_ended(api, goal["id"])
    assert goal["status"] == "failed" and goal["status_reason"] == "1 of 2 child tasks failed", goal
    assert goal["progress"]["by_status"] == {"done": 1, "failed": 1}
    by_title = {c["title"]: c for c in goal["report"]["children"]}
    assert by_title["Write a.txt"]["status"] == "done" and by_title["Write b.txt"]["status"] == "failed"
    assert by_title["Write b.txt"]["reason"] == "step limit of 1 reached"
    assert goal["report"]["status"] == "failed"


async def test_a_child_for_an_agent_that_may_do_more_is_refused(api: httpx.AsyncClient, bare_repo) -> None:
    """A planner cannot widen what runs for it: the broader agent's child is never planned, the reason
    is on the meta session's record, and the meta run and goal end failed instead of waiting for it."""
    await agent(api, "writer", WRITER)  # the planner's own tools and permissions: no more
    await agent(api, "wider", WRITER, permissions={"commands": {"default": "allow", "network": True}})
    await agent(api, "planner", planner(("a.txt", "writer"), ("b.txt", "wider")))
    await repository(api, bare_repo)
    goal = (await api.post("/v1/goals", json={"title": "Widen", "meta_agent": "planner", "repository": "demo"})).json()
    goal = await goal_ended(api, goal["id"])
    assert goal["status"] == "failed" and goal["status_reason"] == "planning failed", goal
    assert [(c["title"], c["status"]) for c in goal["children"]] == [("Write a.txt", "done")], goal

    meta = (await api.get(f"/v1/runs/{goal['meta_run_id']}")).json()
    why = "delegation refused: agent 'wider' may do more than 'planner' (permissions.commands.default: allow"
    assert meta["status"] == "failed" and why in meta["reason"], meta
    assert meta["reason"].startswith("1 of 2 children not planned: Write b.txt"), meta
    session = (await api.get(f"/v1/sessions/{meta['session_id']}")).json()
    refused = [c for c in session["changes"] if c["type"] == "refused"]
    assert [(c["tool"], c["reason"]) for c in refused] == [("spawn_child", "not-planned")], session
    assert why in refused[0]["detail"] and "permissions.commands.network" in refused[0]["detail"], refused
    assert git(bare_repo, "show", f"{meta['branch']}:meta-plan.json")  # the meta session's own work is kept


async def test_an_agent_named_in_delegates_to_runs_its_child(api: httpx.AsyncClient, bare_repo) -> None:
    await agent(api, "wider", WRITER, permissions={"commands": {"default": "allow", "network": True}})
    await agent(api, "planner", planner(("a.txt", "wider")), delegates_to=["wider"])
    await repository(api, bare_repo)
    goal = (await api.post("/v1/goals", json={"title": "Grant", "meta_agent": "planner", "repository": "demo"})).json()
    goal = await goal_ended(api, goal["id"])
    assert goal["status"] == "done" and goal["meta"]["run_status"] == "succeeded", goal
    wider = (await api.get("/v1/agents/wider")).json()
    assert [(c["agent_id"], c["status"]) for c in goal["children"]] == [(wider["id"], "done")], goal


SLEEPER = """
steps:
  - tool_calls: [{name: run_command, args: {cmd: "sleep 120"}}]
  - tool_calls: [{name: finish, args: {summary: "slept"}}]
"""


async def test_cancelling_a_goal_cancels_its_running_runs(api: httpx.AsyncClient, bare_repo) -> None:
    await agent(api, "sleeper", SLEEPER, permissions={"commands": {"allow": ["sleep *"]}})
    await agent(api, "planner", planner(("a.txt", "sleeper"), ("b.txt", "sleeper")), delegates_to=["sleeper"])
    await repository(api, bare_repo)
    goal = (await api.post("/v1/goals", json={"title": "Long", "meta_agent": "planner", "repository": "demo"})).json()
    goal = await wait_for(
        api,
        f"/v1/goals/{goal['id']}",
        # The goal follows its children's events: its move to in_progress may come after they run.
        lambda g: (
            len(g["children"]) == 2
            and all(c["run_status"] == "running" for c in g["children"])
            and g["status"] == "in_progress"
        ),
        attempts=1800,
    )

    r = await api.post(f"/v1/goals/{goal['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    for child in goal["children"]:
        run = await wait_for(api, f"/v1/runs/{child['run_id']}", lambda x: x["status"] in FINAL)
        assert run["status"] == "cancelled" and "cancelled by" in run["reason"], run
    meta = await wait_for(api, f"/v1/runs/{goal['meta_run_id']}", lambda x: x["status"] in FINAL)
    assert meta["status"] == "cancelled", meta
    goal = await goal_ended(api, goal["id"])
    assert goal["status"] == "cancelled" and [c["status"] for c in goal["report"]["children"]] == [
        "cancelled",
        "cancelled",
    ], goal
    r = await api.post(f"/v1/goals/{goal['id']}/cancel")
    assert r.status_code == 409 and "does not change" in r.json()["detail"], r.text


BIG = "x" * 20_000  # about 5000 output tokens in one reply: more than a child's share
OVERSPENDER = f"""
steps:
  - tool_calls: [{{name: write_file, args: {{path: "{{{{target_file}}}}", content: "first part\\n"}}}}]
  - say: "{BIG}"
    tool_calls: [{{name: write_file, args: {{path: "more-{{{{target_file}}}}", content: "second part\\n"}}}}]
  - tool_calls: [{{name: write_file, args: {{path: "never.txt", content: "past the budget\\n"}}}}]
  - tool_calls: [{{name: finish, args: {{summary: "done"}}}}]
"""


async def test_goal_budget_splits_and_the_overspending_child_is_stopped(
    api: httpx.AsyncClient, stack, bare_repo
) -> None:
    await agent(api, "planner", planner(("a.txt", "writer"), ("b.txt", "writer"), ("c.txt", "overspender")))
    await agent(api, "writer", WRITER)
    await agent(api, "overspender", OVERSPENDER)
    await repository(api, bare_repo)
    # The planner spends about 1700 tokens; each share is about 2500, and a writer needs about 1100.
    budget = 9200
    goal = (
        await api.post(
            "/v1/goals",
            json={"title": "Capped", "meta_agent": "planner", "repository": "demo", "budget": {"tokens": budget}},
        )
    ).json()
    goal = await goal_ended(api, goal["id"])
    shares = [c["budget"]["tokens"] for c in goal["children"]]
    assert len(set(shares)) == 1 and sum(shares) <= budget, goal  # even, never more than the goal had
    by_file = {c["title"]: c for c in goal["children"]}
    for name in ("Write a.txt", "Write b.txt"):
        assert by_file[name]["status"] == "done" and by_file[name]["tokens"] <= by_file[name]["budget"]["tokens"]
    c = by_file["Write c.txt"]
    # The goal says which budget stopped its child, and how much of it was spent, in its reason and report.
    spent = re.fullmatch(
        re.escape(f"1 of 3 child tasks failed: 1 stopped by a spent budget (goal {goal['id']} (task {c['task_id']}'s ")
        + r"share\): (\d+) of "
        + re.escape(f"{c['budget']['tokens']} tokens spent)"),
        goal["status_reason"],
    )
    assert goal["status"] == "failed" and spent and int(spent[1]) > c["budget"]["tokens"], goal
    assert goal["report"]["reason"] == goal["status_reason"]
    run = (await api.get(f"/v1/runs/{c['run_id']}")).json()
    assert run["status"] == "failed" and run["reason"] == "budget_exceeded", run
    assert run["config"]["budget"]["tokens"] <= c["budget"]["tokens"]
    # Stopped before the third call: its work so far is committed on its branch, nothing after it.
    assert sorted(git(bare_repo, "ls-tree", "--name-only", run["branch"]).split()) == [
        "README.md",
        "c.txt",
        "more-c.txt",
    ]
    assert git(bare_repo, "rev-parse", run["branch"]) == run["commit_sha"]
    assert git(bare_repo, "log", "--format=%s", "main") == "init"  # a stopped run is never merged
    verdict = (await api.get(f"/v1/runs/{run['id']}/verify")).json()
    assert verdict["ok"] and verdict["ledger_hash"] == run["ledger_hash"], verdict  # the ledger is intact
    assert goal["budget"]["spent_tokens"] == goal["usage"]["tokens"] and goal["budget"]["tokens"] == budget
    # The alerts went out for the gateway and the board: the run stopped, the goal's budget at 80% and spent.
    await until_alerted(
        stack,
        {("exceeded", "run", run["id"]), ("warning", "goal", goal["id"]), ("exceeded", "goal", goal["id"])},
        goal_id=goal["id"],
    )
    # Spend and what is left, for dashboards.
    async with httpx.AsyncClient() as c:
        metrics = (await c.get(f"http://127.0.0.1:{stack.metrics_ports['core-api']}/metrics")).text
    spent = f'nexus_budget_spent_tokens{{id="{goal["id"]}",scope="goal"}} {float(goal["usage"]["tokens"])}'
    left = f'nexus_budget_remaining_tokens{{id="{goal["id"]}",scope="goal"}} {float(goal["budget"]["left_tokens"])}'
    assert spent in metrics and left in metrics, [m for m in metrics.splitlines() if "budget" in m]
    # An agent without a daily budget has no day gauge (reading its day at every run's end grew with history).
    assert f'nexus_budget_spent_tokens{{id="{run["agent_id"]}",scope="agent"}}' not in metrics


async def budget_alerts(stack, **match) -> list[tuple[str, str, str]]:
    """(level, scope, scope id) of every budget.* event on the stream whose fields match."""
    nc = await connect(stack.nats_url, "test-goals", creds=stack.creds("tools"))
    out = []
    try:
        js = nc.jetstream()
        sub = await js.subscribe("nexus.evt.budget.>", stream=EVENTS_STREAM, ordered_consumer=True)
        while True:
            msg = await sub.next_msg(timeout=10)
            env = json.loads(msg.data)
            if all(env["data"].get(k) == v for k, v in match.items()):
                out.append((env["type"].split(".")[1], env["data"]["scope"], env["data"]["scope_id"]))
            if msg.metadata.num_pending == 0:
                return out
    finally:
        await nc.drain()


async def until_alerted(stack, expected: set[tuple[str, str, str]], **match) -> None:
    """Poll the stream until every expected alert is on it (core-api emits them as runs end)."""
    alerts: list = []
    for _ in range(100):
        alerts = await budget_alerts(stack, **match)
        if expected <= set(alerts):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"alerts {expected - set(alerts)} never came; saw {alerts}")


SPENDER = f"""
steps:
  - say: "{"y" * 16_000}"
    tool_calls: [{{name: note, args: {{message: "a long answer"}}}}]
  - tool_calls: [{{name: finish, args: {{summary: "spent"}}}}]
"""


async def test_agent_daily_cap_blocks_the_next_dispatch_until_raised(api: httpx.AsyncClient, stack) -> None:
    spender = await agent(api, "spender", SPENDER)
    r = await api.put("/v1/budgets/agents/spender", json={"tokens": 3000})
    assert r.status_code == 200, r.text
    first = (await api.post("/v1/tasks", json={"title": "first", "assignee": "spender"})).json()
    run = await wait_for(api, f"/v1/runs/{first['current_run_id']}", lambda x: x["status"] in FINAL, attempts=1200)
    # One long answer overshot the cap; the runner stopped before its next call.
    assert run["status"] == "failed" and run["reason"] == "budget_exceeded", run
    day = (await api.get("/v1/budgets/agents/spender")).json()["budget"]
    assert day["spent_tokens"] > 3000 and day["left_tokens"] == 0, day

    second = (await api.post("/v1/tasks", json={"title": "second", "assignee": "spender"})).json()
    assert second["current_run_id"] is None
    second = (await api.get(f"/v1/tasks/{second['id']}")).json()
    assert second["status"] == "ready" and second["blocked"].startswith(f"budget: agent {spender['id']} spent"), second
    await until_alerted(stack, {("exceeded", "agent", spender["id"])}, agent_id=spender["id"])

    r = await api.put("/v1/budgets/agents/spender", json={"tokens": 100_000})
    assert r.status_code == 200 and r.json()["released_tasks"] == [second["id"]], r.text
    second = (await api.get(f"/v1/tasks/{second['id']}")).json()
    run = await wait_for(api, f"/v1/runs/{second['current_run_id']}", lambda x: x["status"] in FINAL, attempts=1200)
    assert run["status"] == "succeeded", run
    audit = (await api.get("/v1/audit", params={"action": "budget.update"})).json()["items"]
    assert [a["resource"] for a in audit] == [f"budgets/agents/{spender['id']}"] * 2
    # A capped agent's day is on the dashboards.
    async with httpx.AsyncClient() as c:
        metrics = (await c.get(f"http://127.0.0.1:{stack.metrics_ports['core-api']}/metrics")).text
    assert f'nexus_budget_spent_tokens{{id="{spender["id"]}",scope="agent"}}' in metrics

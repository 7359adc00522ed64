"""Goals and budgets in core-api: the goal's detail, cancelling (and the 409 naming the rule), a
goal's budget split among the children a plan names, an agent's daily cap holding work back until
a lead raises it, and the price list as data an admin edits. Runs are dispatched for real; no
runner executes here (tests/e2e run them)."""

import uuid

import pytest

from nexus.core_api.workflow.engine import plan_children
from nexus.events.payloads import ChildPlan, PlanChildren
from tests.core_api.conftest import assert_problem, bearer, new_agent, new_key
from tests.core_api.test_run_convergence import in_app
from tests.core_api.test_sse import collect, sse


async def audited(client, action: str, resource: str) -> bool:
    r = await client.get("/v1/audit", params={"action": action, "resource": resource})
    assert r.status_code == 200, r.text
    return any(e["action"] == action and e["resource"] == resource for e in r.json()["items"])


pytestmark = pytest.mark.infra


async def test_price_list_is_data_admins_edit(client) -> None:
    prices = {p["model"]: p for p in (await client.get("/v1/prices")).json()}
    assert prices["gpt-4o"]["input_per_mtok"] == 2.5 and prices["scripted"]["output_per_mtok"] == 0.0  # seeded
    model = f"house-model-{uuid.uuid4().hex[:6]}"
    r = await client.put(f"/v1/prices/{model}", json={"input_per_mtok": 3.0, "output_per_mtok": 12.0})
    assert r.status_code == 200 and r.json()["model"] == model and r.json()["output_per_mtok"] == 12.0, r.text
    assert await audited(client, "price.update", f"prices/{model}")
    # A run of an agent on that model is handed its price.
    agent = await new_agent(client, llm={"provider": "scripted", "model": f"{model}-2026-01"})
    task = (await client.post("/v1/tasks", json={"title": "priced", "assignee": agent["id"]})).json()
    run = (await client.get(f"/v1/runs/{task['current_run_id']}")).json()
    assert run["config"]["price"] == [3.0, 12.0], run["config"]

    lead = await new_key(client, "lead")
    assert_problem(
        await client.put(f"/v1/prices/{model}", json={"input_per_mtok": 1, "output_per_mtok": 1}, headers=bearer(lead)),
        403,
    )
    assert_problem(
        await client.put(f"/v1/prices/{model}", json={"input_per_mtok": -1, "output_per_mtok": 1}),
        422,
        "input_per_mtok",
    )
    assert_problem(await client.put(f"/v1/prices/{model}", json={"input_per_mtok": 1}), 422, "output_per_mtok")
    assert_problem(
        await client.put("/v1/prices/Bad Name", json={"input_per_mtok": 1, "output_per_mtok": 1}), 422, "model"
    )
    assert (await client.delete(f"/v1/prices/{model}")).status_code == 204
    assert_problem(await client.get(f"/v1/prices/{model}"), 404)


async def test_goal_detail_cancel_and_the_rule_a_refused_move_names(client) -> None:
    meta = await new_agent(client)
    r = await client.post(
        "/v1/goals", json={"title": "Budgeted", "meta_agent": meta["name"], "budget": {"usd": 0.5, "tokens": 1000}}
    )
    assert r.status_code == 201, r.text
    goal = r.json()
    assert goal["status"] == "planning" and goal["status_reason"] == "its meta session is planning", goal
    assert goal["budget"] == {
        "usd": 0.5,
        "tokens": 1000,
        "spent_usd": 0.0,
        "spent_tokens": 0,
        "left_usd": 0.5,
        "left_tokens": 1000,
    }
    assert goal["meta"]["run_id"] == goal["meta_run_id"] and goal["meta"]["run_status"] == "queued"
    assert goal["progress"] == {"total": 0, "by_status": {}} and goal["children"] == [] and goal["report"] is None
    run = (await client.get(f"/v1/runs/{goal['meta_run_id']}")).json()
    assert run["config"]["budget"] == {"usd": 0.5, "tokens": 1000}  # the meta session may spend the whole goal's budget

    r = await client.post(f"/v1/goals/{goal['id']}/cancel")
    assert r.status_code == 200, r.text
    cancelled = r.json()
    assert cancelled["status"] == "cancelled" and cancelled["ended_at"], cancelled
    assert (await client.get(f"/v1/runs/{goal['meta_run_id']}")).json()["status"] == "cancelled"
    report = cancelled["report"]
    assert report["status"] == "cancelled" and report["meta"]["status"] == "cancelled" and report["duration_s"] >= 0, (
        report
    )
    assert await audited(client, "goal.cancel", f"goals/{goal['id']}")

    # The goal's feed: its own events only, in order, ending with its report.
    feed = [m for m in await collect(sse(client, f"/v1/goals/{goal['id']}/events"), lambda got: False) if "event" in m]
    assert all(m["data"]["data"]["goal_id"] == goal["id"] for m in feed)
    assert [m["data"]["data"]["status"] for m in feed if m["event"] == "task.status_changed"] == [
        "in_progress",
        "cancelled",
    ]
    moves = [m for m in feed if m["event"].startswith("goal.")]
    assert [m["event"] for m in moves] == [
        "goal.created",
        "goal.status_changed",
        "goal.status_changed",
        "goal.reported",
    ], feed
    assert [m["data"]["data"]["status"] for m in moves[1:3]] == ["planning", "cancelled"]
    assert feed[-1]["event"] == "goal.reported"
    resumed = await collect(sse(client, f"/v1/goals/{goal['id']}/events", last_id=feed[-2]["id"]), lambda got: False)
    assert [m["event"] for m in resumed if "event" in m] == ["goal.reported"]  # Last-Event-ID resumes after it

    body = assert_problem(await client.post(f"/v1/goals/{goal['id']}/cancel"), 409, "status")
    assert "cancelled to cancelled: a goal that is done, failed or cancelled does not change" in body["detail"], body
    assert_problem(await client.put(f"/v1/goals/{goal['id']}/budget", json={"usd": 5}), 409, "status")
    assert_problem(await client.post("/v1/goals/goal_nope/cancel"), 404)
    assert_problem(await client.post("/v1/goals", json={"title": "x", "budget": {"usd": -1}}), 422, "budget.usd")
    viewer = await new_key(client, "viewer")
    assert_problem(await client.post(f"/v1/goals/{goal['id']}/cancel", headers=bearer(viewer)), 403)


async def test_goal_budget_split_among_the_planned_children(app, client) -> None:
    planner, writer = await new_agent(client), await new_agent(client)
    for weights, tokens, expected in (([1, 1, 1], 900, [300, 300, 300]), ([1, 2], 900, [300, 600])):
        goal = (
            await client.post(
                "/v1/goals", json={"title": "Split", "meta_agent": planner["name"], "budget": {"tokens": tokens}}
            )
        ).json()
        meta = (await client.get(f"/v1/runs/{goal['meta_run_id']}")).json()
        plan = PlanChildren(
            run_id=meta["id"],
            session_id=meta["session_id"],
            children=[
                ChildPlan(
                    session_id=f"ses_{uuid.uuid4().hex[:20]}", title=f"child {i}", agent_id=writer["id"], weight=w
                )
                for i, w in enumerate(weights)
            ],
        )
        await in_app(client, plan_children, app.state.ctx, plan)
        await in_app(client, plan_children, app.state.ctx, plan)  # a redelivered plan changes nothing
        detail = (await client.get(f"/v1/goals/{goal['id']}")).json()
        assert detail["status"] == "in_progress" and detail["progress"]["total"] == len(weights), detail
        assert [c["budget"] for c in detail["children"]] == [{"tokens": t} for t in expected]
        assert [c["weight"] for c in detail["children"]] == weights
        for child in detail["children"]:
            run = (await client.get(f"/v1/runs/{child['run_id']}")).json()
            assert run["config"]["budget"]["tokens"] <= child["budget"]["tokens"], run[
                "config"
            ]  # never more than its share


async def test_agent_daily_cap_holds_work_until_a_lead_raises_it(client) -> None:
    agent = await new_agent(client)
    lead = await new_key(client, "lead")
    r = await client.put(f"/v1/budgets/agents/{agent['name']}", json={"tokens": 0}, headers=bearer(lead))
    assert r.status_code == 200 and r.json()["budget"]["left_tokens"] == 0, r.text
    task = (await client.post("/v1/tasks", json={"title": "held", "assignee": agent["id"]})).json()
    assert task["current_run_id"] is None and task["status"] == "ready", task
    task = (await client.get(f"/v1/tasks/{task['id']}")).json()
    assert task["blocked"].startswith(f"budget: agent {agent['id']} spent"), task

    r = await client.put(f"/v1/budgets/agents/{agent['id']}", json={"tokens": 5000, "usd": 1.0}, headers=bearer(lead))
    assert r.status_code == 200 and r.json()["released_tasks"] == [task["id"]], r.text
    task = (await client.get(f"/v1/tasks/{task['id']}")).json()
    assert task["current_run_id"] and task["blocked"] == "" and task["status"] == "in_progress", task
    run = (await client.get(f"/v1/runs/{task['current_run_id']}")).json()
    assert run["config"]["budget"] == {"usd": 1.0, "tokens": 5000}
    assert await audited(client, "budget.update", f"budgets/agents/{agent['id']}")

    viewer = await new_key(client, "viewer")
    assert_problem(
        await client.put(f"/v1/budgets/agents/{agent['id']}", json={"tokens": 1}, headers=bearer(viewer)), 403
    )
    assert_problem(await client.put(f"/v1/budgets/agents/{agent['id']}", json={"tokens": -1}), 422, "tokens")
    assert_problem(await client.put(f"/v1/budgets/agents/{agent['id']}", json={"dollars": 1}), 422, "dollars")
    assert_problem(await client.get("/v1/budgets/agents/nobody"), 404)


async def test_a_goal_cancelled_while_its_budget_held_work_back_says_so(client) -> None:
    agent = await new_agent(client)
    goal = (await client.post("/v1/goals", json={"title": "Spent", "budget": {"tokens": 0}})).json()
    task = (
        await client.post("/v1/tasks", json={"title": "held", "assignee": agent["id"], "goal_id": goal["id"]})
    ).json()
    task = (await client.get(f"/v1/tasks/{task['id']}")).json()
    assert task["blocked"] == f"budget: goal {goal['id']} spent (0 of 0 tokens)", task
    r = await client.post(f"/v1/goals/{goal['id']}/cancel")
    assert r.status_code == 200, r.text
    goal = (await client.get(f"/v1/goals/{goal['id']}")).json()
    assert goal["status_reason"].endswith(
        f": 1 held back by a spent budget (budget: goal {goal['id']} spent (0 of 0 tokens))"
    ), goal

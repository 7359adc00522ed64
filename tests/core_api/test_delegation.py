"""A meta run's plan hands children only to agents that may do no more than its own, or that its
agent names in `delegates_to`; the field is checked where agents are written."""

import uuid

import pytest

from nexus.core_api.workflow.engine import plan_children
from nexus.db.documents import AuditEntry, Task
from nexus.events.payloads import ChildPlan, PlanChildren
from tests.core_api.conftest import assert_problem, in_app, new_agent

pytestmark = pytest.mark.infra
NARROW = {"tools": ["spawn_child", "write_file", "finish"], "permissions": {"can_commit": True}}


async def _plan(client, app, meta_agent: dict, *children: dict) -> tuple[dict, list[str]]:
    goal = (await client.post("/v1/goals", json={"title": "Split", "meta_agent": meta_agent["name"]})).json()
    meta = (await client.get(f"/v1/runs/{goal['meta_run_id']}")).json()
    sessions = [f"ses_{uuid.uuid4().hex[:20]}" for _ in children]
    plan = PlanChildren(
        run_id=meta["id"],
        session_id=meta["session_id"],
        children=[
            ChildPlan(session_id=s, title=f"child {i}", agent_id=c["name"])
            for i, (s, c) in enumerate(zip(sessions, children, strict=True))
        ],
    )
    await in_app(client, plan_children, app.state.ctx, plan)
    return meta, sessions


async def _task(client, session_id: str) -> Task | None:
    return await in_app(client, Task.find_one, {"session_id": session_id})


async def test_a_child_goes_only_to_an_agent_that_may_do_no_more(client, app) -> None:
    planner = await new_agent(client, **NARROW)
    narrower = await new_agent(client, tools=["write_file", "finish"], permissions={"can_commit": True})
    broader = await new_agent(
        client, tools=["write_file", "run_command"], permissions={"commands": {"default": "allow"}}
    )
    meta, (ok, refused) = await _plan(client, app, planner, narrower, broader)

    child = await _task(client, ok)
    assert child is not None and child.assignee_agent_id == narrower["id"]
    assert await _task(client, refused) is None  # never a task, never a run
    audit = await in_app(client, AuditEntry.find_one, {"action": "session.child_refused", "after_id": refused})
    assert audit is not None and audit.resource == f"runs/{meta['id']}", audit


async def test_an_agent_named_in_delegates_to_is_granted(client, app) -> None:
    broader = await new_agent(client, tools=[], permissions={"commands": {"default": "allow", "network": True}})
    planner = await new_agent(client, **NARROW, delegates_to=[broader["name"]])
    _, (granted,) = await _plan(client, app, planner, broader)
    child = await _task(client, granted)
    assert child is not None and child.assignee_agent_id == broader["id"]


async def test_the_refusal_names_every_broader_field(client, app) -> None:
    from nexus.core_api.errors import DomainError
    from nexus.core_api.workflow.delegation import check_child_agent
    from nexus.db.documents import Run

    planner = await new_agent(client, **NARROW)
    broader = await new_agent(client, tools=["run_command"], permissions={"can_merge": True})
    meta, _ = await _plan(client, app, planner)
    run = await in_app(client, Run.get, meta["id"])
    with pytest.raises(DomainError) as refused:
        await in_app(client, check_child_agent, run, broader["name"])
    assert refused.value.status_code == 403 and refused.value.field == "agent"
    assert f"agent {broader['name']!r} may do more than {planner['name']!r}" in refused.value.detail
    assert "tools: run_command" in refused.value.detail and "permissions.can_merge" in refused.value.detail
    assert await in_app(client, check_child_agent, run, None) == planner["id"]  # its own agent, same revision


async def test_delegates_to_is_validated_where_agents_are_written(client) -> None:
    other = await new_agent(client)
    base = {"system_prompt": "Plan."}
    assert_problem(
        await client.post("/v1/agents", json={**base, "name": "p1", "delegates_to": ["Not A Name"]}),
        422,
        "delegates_to[0]",
    )
    body = assert_problem(
        await client.post("/v1/agents", json={**base, "name": "p1", "delegates_to": [other["name"], "nobody-here"]}),
        422,
        "delegates_to[1]",
    )
    assert "no agent named 'nobody-here'" in body["detail"], body
    assert_problem(
        await client.post("/v1/agents", json={**base, "name": "p1", "delegates_to": [other["name"], other["name"]]}),
        422,
        "delegates_to[1]",
    )
    assert_problem(
        await client.post("/v1/agents", json={**base, "name": "p1", "delegates_to": "x"}), 422, "delegates_to"
    )
    made = await new_agent(client, delegates_to=[other["name"]])
    assert made["spec"]["delegates_to"] == [other["name"]]
    spec = {**made["spec"], "delegates_to": ["nobody-here"]}
    assert_problem(await client.put(f"/v1/agents/{made['id']}", json=spec), 422, "delegates_to[0]")


async def test_a_plan_handed_out_again_dispatches_the_child_its_first_handling_did_not(
    client, app, monkeypatch: pytest.MonkeyPatch
) -> None:
    """core-api died after storing a planned child and before dispatching it: the plan comes again (it was
    never acknowledged) and the child it finds is dispatched, once."""
    from nexus.core_api.workflow import launch

    planner = await new_agent(client, **NARROW)
    child_agent = await new_agent(client, tools=["write_file", "finish"], permissions={"can_commit": True})
    original = launch.dispatch_task

    async def died(ctx, task):
        if task.parent_run_id:  # the child, stored; core-api killed before its dispatch
            raise RuntimeError("killed")
        return await original(ctx, task)

    monkeypatch.setattr(launch, "dispatch_task", died)
    goal = (await client.post("/v1/goals", json={"title": "Split", "meta_agent": planner["name"]})).json()
    meta = (await client.get(f"/v1/runs/{goal['meta_run_id']}")).json()
    plan = PlanChildren(
        run_id=meta["id"],
        session_id=meta["session_id"],
        children=[ChildPlan(session_id=f"ses_{uuid.uuid4().hex[:20]}", title="child", agent_id=child_agent["name"])],
    )
    with pytest.raises(RuntimeError):
        await in_app(client, plan_children, app.state.ctx, plan)
    stored = await _task(client, plan.children[0].session_id)
    assert stored is not None and stored.status == "ready" and stored.current_run_id is None
    monkeypatch.setattr(launch, "dispatch_task", original)
    await in_app(client, plan_children, app.state.ctx, plan)
    await in_app(client, plan_children, app.state.ctx, plan)  # and again: nothing twice
    child = await _task(client, plan.children[0].session_id)
    assert child is not None and child.status == "in_progress" and child.current_run_id
    runs = (await client.get("/v1/runs", params={"task_id": child.id})).json()["items"]
    assert [r["id"] for r in runs] == [child.current_run_id]

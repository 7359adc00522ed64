"""A meta session as the runner lives it (core-api played by the test): spawn_child plans
children, meta-plan.json is written through the hypervisor, the plan goes out as
nexus.cmd.core.plan_children.<run_id>, and the session waits for every child's end before finishing."""

import asyncio
import json

import msgspec
import pytest

from nexus.events.bus import Publisher, connect
from nexus.events.envelope import decode_raw
from nexus.events.payloads import ChildFinished, PlanChildren
from tests.agent_runner.test_runner_support import changes, config, final_status, js, read_events, start_runner  # noqa: F401 — pytest fixtures, used as parameters

pytestmark = pytest.mark.infra
PLANNER = """
steps:
  - tool_calls:
      - {name: spawn_child, args: {title: "Write a", target_files: [a.txt], agent: writer}}
      - {name: spawn_child, args: {title: "Write b", target_files: [b.txt]}}
  - tool_calls: [{name: finish, args: {summary: "planned"}}]
"""


async def test_meta_session_plans_waits_and_summarises(js, nats_url, nats_creds, tmp_path) -> None:
    cfg = config(PLANNER, meta=True, tools=["spawn_child", "finish"], task={"title": "Plan", "goal_id": "goal_x"})
    plans: asyncio.Queue = asyncio.Queue()

    async def on_plan(msg) -> None:
        plans.put_nowait(msgspec.json.decode(decode_raw(msg.data).data, type=PlanChildren))

    nc = await connect(nats_url, "tests", creds=nats_creds)
    await nc.subscribe("nexus.cmd.core.plan_children.*", cb=on_plan)  # a plain subscription sees it too
    await nc.flush()
    try:
        r = await start_runner(tmp_path, nats_url, cfg)
        plan = await asyncio.wait_for(plans.get(), 60)
        while plan.run_id != cfg.run_id:
            plan = await asyncio.wait_for(plans.get(), 60)
    finally:
        await nc.drain()
    assert plan.session_id == cfg.session_id
    a, b = plan.children
    assert (a.title, a.target_files, a.agent_id) == ("Write a", ["a.txt"], "writer")
    assert (b.target_files, b.agent_id) == (["b.txt"], None)
    on_disk = json.loads((r.workspace / "meta-plan.json").read_text())
    assert on_disk == {
        "metaSessionId": cfg.session_id,
        "goalId": "goal_x",
        "children": [
            {"sessionId": a.session_id, "title": "Write a", "targetFiles": ["a.txt"]},
            {"sessionId": b.session_id, "title": "Write b", "targetFiles": ["b.txt"]},
        ],
    }
    assert r.proc.returncode is None  # still waiting for its children

    core = Publisher(js, "core-api")
    await core.publish(
        "run.child_finished",
        ChildFinished(session_id=a.session_id, run_id="run_a", task_id="task_a", status="succeeded"),
        run_id=cfg.run_id,
    )
    await core.publish(
        "run.child_finished",
        ChildFinished(
            session_id=b.session_id,
            run_id="",
            task_id="",
            status="failed",
            reason="not planned: agent 'nobody' does not exist",
        ),
        run_id=cfg.run_id,
    )
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, cfg.run_id)
    end = final_status(events)
    assert end["status"] == "succeeded", end
    assert f"- Write a ({a.session_id}): succeeded" in end["summary"]
    assert f"- Write b ({b.session_id}): failed: not planned: agent 'nobody' does not exist" in end["summary"]
    assert [c["childSessionId"] for c in changes(events, "child-session")] == [a.session_id, b.session_id]
    assert [c["relPath"] for c in changes(events, "file-write")] == ["meta-plan.json"]


async def test_a_plan_carries_no_secret_the_model_put_in_it(js, nats_url, nats_creds, tmp_path) -> None:
    """A child's title and description are the model's text, and they leave the run (the plan command,
    core-api's tasks, a board): a secret's value in them goes out as its reference."""
    value = "sk-plan-Bilby-31Zq+/w"
    planner = (
        "steps:\n  - tool_calls:\n"
        f"      - {{name: spawn_child, args: {{title: 'Rotate {value}', description: 'use {value}', "
        "target_files: [a.txt]}}\n"
        "  - tool_calls: [{name: finish, args: {summary: planned}}]\n"
    )
    cfg = config(planner, meta=True, tools=["spawn_child", "finish"], secrets=["API_TOKEN"], task={"title": "Plan"})
    plans: asyncio.Queue = asyncio.Queue()

    async def on_plan(msg) -> None:
        plans.put_nowait((msg.data, msgspec.json.decode(decode_raw(msg.data).data, type=PlanChildren)))

    nc = await connect(nats_url, "tests", creds=nats_creds)
    await nc.subscribe("nexus.cmd.core.plan_children.*", cb=on_plan)
    await nc.flush()
    try:
        r = await start_runner(tmp_path, nats_url, cfg, secrets={"API_TOKEN": value})
        raw, plan = await asyncio.wait_for(plans.get(), 60)
        while plan.run_id != cfg.run_id:
            raw, plan = await asyncio.wait_for(plans.get(), 60)
    finally:
        await nc.drain()
    (child,) = plan.children
    assert (child.title, child.description) == ("Rotate ${secret:API_TOKEN}", "use ${secret:API_TOKEN}"), child
    assert value.encode() not in raw
    assert value not in (r.workspace / "meta-plan.json").read_text()
    r.proc.kill()
    await r.exit_code()

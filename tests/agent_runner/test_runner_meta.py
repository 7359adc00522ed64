"""A meta session as the runner lives it (core-api played by the test): spawn_child plans
children, meta-plan.json is written through the hypervisor, the plan goes out as
nexus.cmd.core.plan_children.<run_id>, and the session waits for every child's end before finishing."""

import asyncio
import json

import msgspec
import pytest

from nexus.events.bus import Publisher, connect
from nexus.events.envelope import decode_raw
from nexus.domain.limits import MAX_BODY_BYTES
from nexus.events.payloads import MAX_CHILDREN, ChildFinished, PlanChildren
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
    # Part of the plan never ran: the meta run does not claim it did, and the ledger says why.
    assert end["status"] == "failed", end
    assert end["reason"] == (
        f"1 of 2 children not planned: Write b ({b.session_id}): not planned: agent 'nobody' does not exist"
    ), end
    refused = changes(events, "refused")
    assert [(c["tool"], c["reason"]) for c in refused] == [("spawn_child", "not-planned")], refused
    assert f"- Write a ({a.session_id}): succeeded" in end["summary"]
    assert f"- Write b ({b.session_id}): failed: not planned: agent 'nobody' does not exist" in end["summary"]
    assert [c["childSessionId"] for c in changes(events, "child-session")] == [a.session_id, b.session_id]
    assert [c["relPath"] for c in changes(events, "file-write")] == ["meta-plan.json"]


async def test_a_plan_carries_no_secret_the_model_put_in_it(js, nats_url, nats_creds, tmp_path) -> None:
    """A child's title and description are the model's text, and they leave the run (the plan command,
    core-api's tasks, a board): a secret's value in them goes out as its reference."""
    value = "sk-plan-Bilby-31Zq+/w"
    hexed = value.encode().hex()  # the canary's encodings are masked too: meta-plan.json is committed and pushed
    planner = (
        "steps:\n  - tool_calls:\n"
        f"      - {{name: spawn_child, args: {{title: 'Rotate {value}', description: 'use {value} or {hexed}', "
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
    assert (child.title, child.description) == (
        "Rotate ${secret:API_TOKEN}",
        "use ${secret:API_TOKEN} or ${secret:API_TOKEN} (hex)",
    ), child
    for text in (value, hexed):
        assert text.encode() not in raw and text not in (r.workspace / "meta-plan.json").read_text()
    r.proc.kill()
    await r.exit_code()


async def _plan_of(nats_url, nats_creds, tmp_path, planner: dict) -> tuple[bytes, PlanChildren, object]:
    """Start a meta run on `planner` (scripted steps) and return the plan it sends, as core-api reads it."""
    cfg = config(
        json.dumps(planner),
        meta=True,
        tools=["spawn_child", "finish"],
        task={"title": "Plan"},
        limits={"max_steps": 20, "max_tokens": 10**12},
    )
    plans: asyncio.Queue = asyncio.Queue()

    async def on_plan(msg) -> None:
        plans.put_nowait(msg.data)

    nc = await connect(nats_url, "tests", creds=nats_creds)
    await nc.subscribe("nexus.cmd.core.plan_children.*", cb=on_plan)
    await nc.flush()
    try:
        r = await start_runner(tmp_path, nats_url, cfg)
        while True:
            raw = await asyncio.wait_for(plans.get(), 120)
            # Decoded with its type's constraints, as core-api decodes it: a plan it would refuse fails here.
            plan = msgspec.json.decode(decode_raw(raw).data, type=PlanChildren)
            if plan.run_id == cfg.run_id:
                return raw, plan, r
    finally:
        await nc.drain()


def _spawns(n: int, **args: object) -> list[dict]:
    return [{"name": "spawn_child", "args": {"title": f"part {i}", **args}} for i in range(n)]


async def test_children_past_the_plan_cap_are_refused_and_the_plan_stays_one_core_api_takes(
    js, nats_url, nats_creds, tmp_path
) -> None:
    calls = _spawns(MAX_CHILDREN + 5)
    steps = [{"tool_calls": calls[i : i + 50]} for i in range(0, len(calls), 50)]
    steps.append({"tool_calls": [{"name": "finish", "args": {"summary": "planned"}}]})
    raw, plan, r = await _plan_of(nats_url, nats_creds, tmp_path, {"steps": steps})
    r.proc.kill()
    await r.exit_code()
    assert len(plan.children) == MAX_CHILDREN
    events = await read_events(js, r.cfg.run_id)
    refused = changes(events, "refused")
    assert [c["reason"] for c in refused] == ["too-many-children"] * 5, refused
    assert len(changes(events, "child-session")) == MAX_CHILDREN


async def test_a_plan_too_large_for_the_bus_is_refused_child_by_child(js, nats_url, nats_creds, tmp_path) -> None:
    """Each child may carry a 16,000-character description and long target paths: the plan as a whole
    must still fit one bus message, or it never reaches core-api and the run waits for nobody."""
    steps = [
        {"tool_calls": _spawns(2, target_files=["p" * 2000])},
        {"tool_calls": _spawns(40, description="d" * 16_000)},
        {"tool_calls": _spawns(30, description="d" * 16_000)},
        {"tool_calls": [{"name": "finish", "args": {"summary": "planned"}}]},
    ]
    raw, plan, r = await _plan_of(nats_url, nats_creds, tmp_path, {"steps": steps})
    r.proc.kill()
    await r.exit_code()
    assert len(raw) < MAX_BODY_BYTES
    events = await read_events(js, r.cfg.run_id)
    reasons = [c["reason"] for c in changes(events, "refused")]
    assert "plan-too-large" in reasons and reasons.count("invalid-arguments") == 2, reasons
    assert len(plan.children) == len(changes(events, "child-session")) == 70 - reasons.count("plan-too-large")

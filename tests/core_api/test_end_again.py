"""A run's end stored by a core-api that died before carrying it out (its task moved, the end
announced, its goal and parent told) is carried out by whoever comes next: the redelivered verdict,
or the sweep for tasks still waiting on an ended run. Carried out twice, each step is taken once."""

import asyncio
from datetime import timedelta

import msgspec
import pytest
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError
from pymongo import AsyncMongoClient

from nexus.core_api.approvals import service as approvals
from nexus.core_api.runs.ingest import ingest_group
from nexus.core_api.workflow import tasks as task_steps
from nexus.core_api.workflow.engine import dispatch_waiting, plan_unplanned_goals, planning_task_id, release_orphans
from nexus.db.documents import Goal, Task, now
from nexus.domain.ids import new_id
from nexus.events.bus import Publisher, connect
from nexus.events.consumer import Delivery
from nexus.events.envelope import decode_raw
from nexus.events import payloads as p
from nexus.events.payloads import RunStatusChanged
from tests.core_api.conftest import in_app, new_agent, new_run
from tests.core_api.test_announce_after_store import an_ask, delivery

pytestmark = pytest.mark.infra


@pytest.fixture
async def publisher(nats_url: str, nats_creds: str):
    nc = await connect(nats_url, "test-end-again", creds=nats_creds)
    yield Publisher(nc.jetstream(), "test")
    await nc.close()


async def _on_stream(publisher: Publisher, run_id: str, status: str) -> Delivery:
    """The runner's status on the run's stream, and the delivery core-api would fetch of it."""
    env = await publisher.publish(
        "run.status", RunStatusChanged(status=status, attempt=1, summary="done"), run_id=run_id, correlation_id=run_id
    )
    msg = await publisher.js.get_last_msg("NEXUS_RUNS", f"nexus.run.{run_id}.status")
    raw = decode_raw(msg.data)
    assert raw.id == env.id
    return Delivery(raw, msgspec.json.decode(raw.data, type=RunStatusChanged), msg.subject, 1, msg.seq)


def _again(d: Delivery, deliveries: int) -> Delivery:
    return Delivery(d.envelope, d.payload, d.subject, deliveries, d.stream_seq)


async def _announced(publisher: Publisher, subject: str, **match: str) -> list[dict]:
    """Every announcement on `subject` whose payload has the fields of `match`."""
    sub = await publisher.js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    found: list[dict] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=5)
            except TimeoutError:
                break  # nothing on the subject at all
            data = msgspec.json.decode(decode_raw(msg.data).data)
            if all(data.get(k) == v for k, v in match.items()):
                found.append(data)
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return found


class Killed(Exception):
    """core-api killed: nothing after this point of the run's end was carried out."""


@pytest.fixture
def dies_before_the_task_follows(monkeypatch: pytest.MonkeyPatch):
    """core-api stores the run's end, then dies before its first follow-up (the task's move)."""

    async def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(task_steps, "follow_run", killed)
    return monkeypatch


async def _ended_then_killed(client, app, publisher, dies: pytest.MonkeyPatch) -> tuple[dict, Delivery]:
    run = await new_run(client)
    running = await _on_stream(publisher, run["id"], "running")
    succeeded = await _on_stream(publisher, run["id"], "succeeded")
    with pytest.raises(Killed):
        await in_app(client, ingest_group, app.state.ctx, [running, succeeded])
    dies.undo()
    assert (await client.get(f"/v1/runs/{run['id']}")).json()["status"] == "succeeded"  # the end is stored
    assert (await client.get(f"/v1/tasks/{run['task_id']}")).json()["status"] == "in_progress"  # and no more
    return run, succeeded


async def test_a_verdict_handed_out_again_carries_out_the_end_a_dead_core_api_did_not(
    client, app, publisher, dies_before_the_task_follows
) -> None:
    run, succeeded = await _ended_then_killed(client, app, publisher, dies_before_the_task_follows)
    await in_app(client, ingest_group, app.state.ctx, [_again(succeeded, 2)])
    assert (await client.get(f"/v1/tasks/{run['task_id']}")).json()["status"] == "done"
    # Handed out once more (another crash, a lost ack): nothing is announced twice.
    await in_app(client, ingest_group, app.state.ctx, [_again(succeeded, 3)])
    assert len(await _announced(publisher, "nexus.evt.run.succeeded", run_id=run["id"])) == 1
    moves = await _announced(publisher, "nexus.evt.task.status_changed", task_id=run["task_id"])
    assert [m["status"] for m in moves].count("done") == 1


async def test_a_verdict_stored_already_and_handed_out_the_first_time_carries_out_nothing_again(
    client, app, publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verdict core-api read from the stream before its delivery (an exit outran it) comes in its
    own turn: the run's end was carried out then, and is not again."""
    run = await new_run(client)
    running = await _on_stream(publisher, run["id"], "running")
    succeeded = await _on_stream(publisher, run["id"], "succeeded")
    await in_app(client, ingest_group, app.state.ctx, [running, succeeded])
    followed: list[str] = []
    original = task_steps.follow_run

    async def counted(*args, **kwargs):
        followed.append(args[0])
        return await original(*args, **kwargs)

    monkeypatch.setattr(task_steps, "follow_run", counted)
    await in_app(client, ingest_group, app.state.ctx, [succeeded])
    assert followed == []
    await in_app(client, ingest_group, app.state.ctx, [_again(succeeded, 2)])
    assert followed == [run["task_id"]]  # the same delivery handed out again: carried out again


async def test_the_sweep_carries_out_the_end_of_a_run_whose_task_still_waits(
    client, app, settings, publisher, dies_before_the_task_follows
) -> None:
    """No redelivery comes (the message was acknowledged, or the end was the operator's): the sweep finds
    the task still in progress on an ended run once the end is older than the requeue delay."""
    run, _ = await _ended_then_killed(client, app, publisher, dies_before_the_task_follows)
    ctx = app.state.ctx
    assert await in_app(client, release_orphans, ctx) == 0  # an end this young may be being carried out
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
    try:
        db = mongo[settings.mongodb_db]
        old = now() - timedelta(hours=1)
        await db["runs"].update_one({"_id": run["id"]}, {"$set": {"updated_at": old}})
        await db["tasks"].update_one({"_id": run["task_id"]}, {"$set": {"updated_at": old}})
    finally:
        await mongo.close()
    assert await in_app(client, release_orphans, ctx) == 1
    task = (await client.get(f"/v1/tasks/{run['task_id']}")).json()
    assert task["status"] == "done"
    assert await in_app(client, release_orphans, ctx) == 0  # settled: nothing left to do
    assert len(await _announced(publisher, "nexus.evt.run.succeeded", run_id=run["id"])) == 1


async def test_a_ready_task_stored_and_never_dispatched_is_dispatched_by_the_sweep(client, app, settings) -> None:
    """A task made ready by a core-api that died before dispatching it (a planned child, a goal's planning
    task, a task its blockers' end made ready) is dispatched once it has waited past the requeue delay;
    one a spent budget holds back, or whose agent is gone, is left waiting."""
    agent = await new_agent(client)
    gone = await new_agent(client)
    assert (await client.delete(f"/v1/agents/{gone['id']}")).status_code in (200, 204)
    ctx = app.state.ctx
    ids = {}
    for name, assignee, blocked in (
        ("never dispatched", agent, ""),
        ("held", agent, "budget: spent"),
        ("gone", gone, ""),
    ):
        task = Task(id=new_id("task"), title=name, status="ready", assignee_agent_id=assignee["id"], blocked=blocked)
        await in_app(client, task.insert)
        ids[name] = task.id
    assert await in_app(client, dispatch_waiting, ctx) == 0  # this young, a dispatch may be under way
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
    try:
        await mongo[settings.mongodb_db]["tasks"].update_many(
            {"_id": {"$in": list(ids.values())}}, {"$set": {"updated_at": now() - timedelta(hours=1)}}
        )
    finally:
        await mongo.close()
    assert await in_app(client, dispatch_waiting, ctx) == 1
    dispatched = (await client.get(f"/v1/tasks/{ids['never dispatched']}")).json()
    assert dispatched["status"] == "in_progress" and dispatched["current_run_id"]
    for name in ("held", "gone"):
        assert (await client.get(f"/v1/tasks/{ids[name]}")).json()["status"] == "ready"
    assert await in_app(client, dispatch_waiting, ctx) == 0


async def test_a_decision_stored_by_a_core_api_that_died_before_telling_the_run_is_told_again(
    client, app, settings, publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without it the run would wait out the approval's time and end as if nobody had decided."""
    run = await new_run(client)
    ctx = app.state.ctx
    asked = an_ask(run)
    await in_app(
        client,
        ingest_group,
        ctx,
        [
            delivery(run["id"], "run.status", p.RunStatusChanged(status="running"), 1),
            delivery(run["id"], "run.approval_requested", asked, 2),
            delivery(run["id"], "run.status", p.RunStatusChanged(status="waiting_approval"), 3),
        ],
    )

    async def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(Publisher, "publish_soon", killed)
    with pytest.raises(Killed):
        await in_app(client, approvals.decide, ctx, asked.approval_id, "approved", "fine", "lead@example.com")
    monkeypatch.undo()
    assert (await client.get(f"/v1/approvals/{asked.approval_id}")).json()["status"] == "approved"
    subject = f"nexus.run.{run['id']}.approval_decided"
    with pytest.raises(NotFoundError):
        await publisher.js.get_last_msg("NEXUS_RUNS", subject)  # the run was never told
    assert await in_app(client, approvals.tell_decided, ctx) == 0  # this young, it may be being told
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
    try:
        db = mongo[settings.mongodb_db]
        await db["runs"].update_one({"_id": run["id"]}, {"$set": {"updated_at": now() - timedelta(hours=2)}})
        await db["approvals"].update_one(
            {"_id": asked.approval_id}, {"$set": {"decided_at": now() - timedelta(hours=1)}}
        )
    finally:
        await mongo.close()
    assert await in_app(client, approvals.tell_decided, ctx) == 1
    assert await in_app(client, approvals.tell_decided, ctx) == 1  # told each sweep while the run waits…
    told = decode_raw((await publisher.js.get_last_msg("NEXUS_RUNS", subject)).data)
    assert msgspec.json.decode(told.data)["decision"] == "approved"
    info = await publisher.js.stream_info("NEXUS_RUNS", subjects_filter=subject)
    assert info.state.subjects == {subject: 1}  # …taken once


async def test_a_goal_stored_without_its_planning_task_is_planned_once_by_the_sweep(
    client, app, settings, publisher
) -> None:
    """core-api died between storing a goal and its planning task: the goal would stay `open` forever.
    Two sweeps at once (two core-apis) make one planning task; its run is noted on the goal."""
    meta = await new_agent(client)
    ctx = app.state.ctx
    goal = Goal(id=new_id("goal"), title="stranded", meta_agent_id=meta["id"])
    await in_app(client, goal.insert)
    assert await in_app(client, plan_unplanned_goals, ctx) == 0  # this young, its request may still be planning it
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
    try:
        await mongo[settings.mongodb_db]["goals"].update_one(
            {"_id": goal.id}, {"$set": {"created_at": now() - timedelta(hours=1)}}
        )
    finally:
        await mongo.close()

    async def two_sweeps() -> list[int]:
        return list(await asyncio.gather(plan_unplanned_goals(ctx), plan_unplanned_goals(ctx)))

    assert sum(await in_app(client, two_sweeps)) >= 1
    tasks = (await client.get(f"/v1/goals/{goal.id}/tasks")).json()["items"]
    assert [t["id"] for t in tasks] == [planning_task_id(goal.id)], tasks
    assert tasks[0]["status"] == "in_progress" and tasks[0]["current_run_id"]
    shown = (await client.get(f"/v1/goals/{goal.id}")).json()
    assert shown["meta_run_id"] == tasks[0]["current_run_id"] and shown["status"] != "open", shown
    assert await in_app(client, plan_unplanned_goals, ctx) == 0  # settled
    assert len(await _announced(publisher, "nexus.evt.goal.created", goal_id=goal.id)) == 1


async def test_a_planning_task_dispatched_by_the_sweep_has_its_run_noted_on_the_goal(client, app, settings) -> None:
    """The planning task was stored, then core-api died: `dispatch_waiting` dispatches it, and the goal
    learns its meta run (the goal's tree is reached through it)."""
    meta = await new_agent(client)
    ctx = app.state.ctx
    goal = Goal(id=new_id("goal"), title="half planned", meta_agent_id=meta["id"])
    task = Task(
        id=planning_task_id(goal.id),
        title="Plan",
        goal_id=goal.id,
        status="ready",
        assignee_agent_id=meta["id"],
        is_meta=True,
    )
    await in_app(client, goal.insert)
    await in_app(client, task.insert)
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
    try:
        db = mongo[settings.mongodb_db]
        await db["goals"].update_one({"_id": goal.id}, {"$set": {"created_at": now() - timedelta(hours=1)}})
        await db["tasks"].update_one({"_id": task.id}, {"$set": {"updated_at": now() - timedelta(hours=1)}})
    finally:
        await mongo.close()
    assert await in_app(client, dispatch_waiting, ctx) == 1
    await in_app(client, plan_unplanned_goals, ctx)
    run_id = (await client.get(f"/v1/tasks/{task.id}")).json()["current_run_id"]
    assert run_id and (await client.get(f"/v1/goals/{goal.id}")).json()["meta_run_id"] == run_id
    assert len((await client.get(f"/v1/goals/{goal.id}/tasks")).json()["items"]) == 1

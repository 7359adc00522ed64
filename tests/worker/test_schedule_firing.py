"""What a fired occurrence does (core-api's side, in process) and how the worker's clock releases
occurrences held back by the overlap policy — against the real NATS and FerretDB."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from nexus.core_api.context import Context
from nexus.core_api.schedules.service import fire, item_id
from nexus.core_api.settings import CoreSettings
from nexus.db.documents import Agent, Schedule, Task
from nexus.domain.ids import new_id
from nexus.events.bus import Publisher
from nexus.events.payloads import FireSchedule
from nexus.worker.scheduler import Scheduler, occurrence_id

pytestmark = pytest.mark.infra
DAY = datetime(2025, 1, 15, tzinfo=UTC)


def at(hour: int) -> datetime:
    return DAY + timedelta(hours=hour)


def command(s: Schedule, when: datetime) -> FireSchedule:
    return FireSchedule(
        schedule_id=s.id, occurrence_at=when.isoformat().replace("+00:00", "Z"), occurrence_id=occurrence_id(s.id, when)
    )


async def _setup(bus, db_name: str, overlap: str) -> tuple[Context, Schedule]:
    ctx = Context(
        settings=CoreSettings(mongodb_db=db_name), nc=bus.nc, js=bus.js, publisher=Publisher(bus.js, "core-api")
    )
    agent = await Agent.find_one({"name": "scheduled"})
    if agent is None:
        agent = Agent(
            id=new_id("agt"),
            name="scheduled",
            spec={"system_prompt": "You run on a clock.", "llm": {"provider": "scripted"}},
        )
        await agent.insert()
    s = Schedule(
        id=new_id("sch"),
        name=f"hourly-{overlap}",
        cron="0 * * * *",
        kind="task",
        overlap=overlap,
        anchor_at=at(9),
        template={"title": "Hourly report", "assignee_agent_id": agent.id},
    )
    await s.insert()
    return ctx, s


async def _tasks(s: Schedule) -> list[Task]:
    return await Task.find({"created_by": f"schedule:{s.id}"}).sort("_id").to_list()


@pytest.mark.parametrize(
    ("overlap", "held", "skipped"), [("skip", [], 2), ("enqueue", [11, 12], 0), ("coalesce", [12], 0)]
)
async def test_overlap_policy_while_the_previous_occurrence_runs(bus, db_name, overlap, held, skipped) -> None:
    ctx, s = await _setup(bus, db_name, overlap)
    first = await fire(ctx, command(s, at(10)))
    assert first == item_id("task", s.id, at(10))
    assert await fire(ctx, command(s, at(10))) == first  # fired twice: one task
    (task,) = await _tasks(s)
    assert task.id == first and task.status == "in_progress" and task.current_run_id  # dispatched
    await fire(ctx, command(s, at(11)))
    await fire(ctx, command(s, at(12)))
    s = await Schedule.get(s.id)
    assert [p.astimezone(UTC).hour for p in s.pending] == held and s.skipped_count == skipped
    assert len(await _tasks(s)) == 1 and s.last_occurrence_at.astimezone(UTC) == at(12)

    # While the first still runs, the clock releases nothing…
    fired: list[FireSchedule] = []

    async def collect(msg) -> None:
        fired.append(msgspec.convert(json.loads(msg.data)["data"], FireSchedule))

    sub = await bus.nc.subscribe("nexus.cmd.core.fire_schedule", cb=collect)
    scheduler = Scheduler(Publisher(bus.js, "worker"))
    await scheduler.tick(now=at(12) + timedelta(seconds=30))
    await bus.nc.flush()
    assert [f for f in fired if f.schedule_id == s.id] == []
    # …once it is done, the oldest held-back occurrence goes.
    await Task.get_pymongo_collection().update_one({"_id": first}, {"$set": {"status": "done"}})
    await scheduler.tick(now=at(12) + timedelta(seconds=31))
    mine = []
    for _ in range(50):
        await bus.nc.flush()
        mine = [f for f in fired if f.schedule_id == s.id]
        if mine or not held:
            break
        await asyncio.sleep(0.05)
    await sub.unsubscribe()
    assert [datetime.fromisoformat(f.occurrence_at.replace("Z", "+00:00")).hour for f in mine] == held[:1]
    for f in mine:
        await fire(ctx, f)
    s = await Schedule.get(s.id)
    tasks = await _tasks(s)
    assert [t.id for t in tasks] == [first] + [item_id("task", s.id, at(h)) for h in held[:1]]
    assert [p.astimezone(UTC).hour for p in s.pending] == held[1:]

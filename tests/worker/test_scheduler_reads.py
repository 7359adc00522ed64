"""The worker's clock at rest reads no schedules: it reads them when one is due by what it read last (fresh,
so a schedule disabled meanwhile does not fire), and every `reread_s` to notice new ones — against the
real FerretDB and NATS."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from nexus.db.documents import Schedule
from nexus.domain.ids import new_id
from nexus.events.bus import Publisher
from nexus.worker import scheduler as scheduler_module
from nexus.worker.scheduler import Scheduler

pytestmark = pytest.mark.infra
DAY = datetime(2025, 1, 15, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute)


async def _schedule(name: str, last: datetime) -> Schedule:
    s = Schedule(
        id=new_id("sch"),
        name=name,
        cron="0 * * * *",
        kind="task",
        anchor_at=at(9),
        last_occurrence_at=last,
        template={"title": "Hourly", "assignee_agent_id": "agt_x"},
    )
    await s.insert()
    return s


async def test_a_clock_at_rest_reads_nothing_and_a_due_schedule_is_read_fresh(bus, db_name, monkeypatch) -> None:
    reads: list[int] = []
    real_find = Schedule.find

    def counting_find(*args, **kwargs):
        reads.append(1)
        return real_find(*args, **kwargs)

    monkeypatch.setattr(scheduler_module.Schedule, "find", counting_find)
    fired: list[str] = []

    async def collect(msg) -> None:
        fired.append(json.loads(msg.data)["data"]["schedule_id"])

    sub = await bus.nc.subscribe("nexus.cmd.core.fire_schedule", cb=collect)
    clock = [1000.0]
    hourly = await _schedule(f"hourly-{new_id('x')}", last=at(10))  # next occurrence: 11:00
    scheduler = Scheduler(Publisher(bus.js, "worker"), grace_s=60, reread_s=60, clock=lambda: clock[0])
    try:
        await scheduler.tick(now=at(10, 30))
        assert len(reads) == 1  # the first tick reads
        for second in range(1, 30):  # at rest: nothing due, nothing read
            clock[0] += 1
            await scheduler.tick(now=at(10, 30) + timedelta(seconds=second))
        assert len(reads) == 1
        # Disabled before it is due: at 11:00 the clock reads it fresh and does not fire it.
        await Schedule.get_pymongo_collection().update_one({"_id": hourly.id}, {"$set": {"enabled": False}})
        clock[0] += 1
        await scheduler.tick(now=at(11))
        assert len(reads) == 2
        await bus.nc.flush()
        assert hourly.id not in fired
        # A schedule created meanwhile is noticed once reread_s has passed, and fires.
        other = await _schedule(f"other-{new_id('x')}", last=at(10))
        clock[0] += 1
        await scheduler.tick(now=at(11, 0) + timedelta(seconds=1))
        assert len(reads) == 2  # not yet: nothing due by what was read
        clock[0] += 60
        await scheduler.tick(now=at(11, 0) + timedelta(seconds=2))
        assert len(reads) == 3
        for _ in range(100):
            await bus.nc.flush()
            if other.id in fired:
                break
        assert fired.count(other.id) == 1 and hourly.id not in fired
    finally:
        await sub.unsubscribe()

"""A goal follows its tasks through core-api's own command `core.follow_goal` (at least once, on the work
queue), sent when one of its tasks moves; a task in no goal sends nothing (core-api once read every task
event for this, three deliveries of nothing per run). The durable those events came through is retired at
start. Real NATS, real FerretDB; core-api's command subscribers as `run_background` runs them."""

import pytest
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError

from nexus.core_api.commands import retire_legacy
from nexus.core_api.tasks.schemas import TaskCreate
from nexus.core_api.workflow import engine
from nexus.db.documents import Goal
from nexus.events import payloads as p
from nexus.events.catalog import EVENTS_STREAM
from nexus.events.permissions import LEGACY_GOALS, subject
from tests.core_api.test_commands import ctx, goal_id, lead, publish, serving, until  # noqa: F401 — fixtures
from tests.events.test_permissions import tools  # noqa: F401 — the fixture: the tests' own connection

pytestmark = pytest.mark.infra


async def _nothing(_task) -> None:
    return None


async def test_a_goals_task_moves_its_goal_and_a_task_in_no_goal_asks_nothing(ctx, tools) -> None:
    asked: list[bytes] = []

    async def heard(msg) -> None:
        asked.append(msg.data)

    sub = await tools.subscribe(subject("core.follow_goal"), cb=heard)
    try:
        async with serving(ctx):
            gid = goal_id()
            await publish(
                tools, "core.create_goal", p.CreateGoal(title="followed", goal_id=gid, principal=await lead())
            )
            goal = await until(lambda: Goal.get(gid), "the goal stored")
            assert goal.status == "open"
            await engine.submit_task(ctx, TaskCreate(title="in no goal"), actor="t", audit=_nothing)
            await tools.flush()
            assert asked == []  # a task in no goal asks its goal nothing
            task = await engine.submit_task(ctx, TaskCreate(title="in it", goal_id=gid), actor="t", audit=_nothing)

            async def moved() -> Goal | None:
                g = await Goal.get(gid)
                return g if g is not None and g.status != "open" else None

            assert (await until(moved, "the goal following its task")).status == "in_progress"
        await tools.flush()
        assert asked and all(gid.encode() in a and task.id.encode() in a for a in asked), asked
    finally:
        await sub.unsubscribe()


async def test_the_durable_on_every_task_event_is_retired(tools) -> None:
    js = tools.jetstream()
    config = ConsumerConfig(durable_name=LEGACY_GOALS.name, filter_subject=LEGACY_GOALS.filter)
    await js.add_consumer(EVENTS_STREAM, config)
    assert await retire_legacy(js) is True
    with pytest.raises(NotFoundError):
        await js.consumer_info(EVENTS_STREAM, LEGACY_GOALS.name)
    assert await retire_legacy(js) is False  # nothing left to retire

"""A task submitted while the bus does not answer is still created with its run stored queued, and the
requeue sweep commands the launch once the bus is back; a task claimed for a run that was never stored
(core-api lost between the two writes) is released and dispatched again (real FerretDB and NATS)."""

import asyncio
import dataclasses
from datetime import timedelta

import msgspec
import nats.errors
import pytest

from nexus.core_api.workflow.engine import release_orphans, requeue_stale
from nexus.db.documents import Task, now
from nexus.events.bus import Publisher, connect
from nexus.events.catalog import CMDS_STREAM, spec
from nexus.events.envelope import decode_raw
from tests.core_api.conftest import in_app, new_agent

pytestmark = pytest.mark.infra


class Unanswered(Publisher):
    """The app's real publisher, except while `down`: then each publish raises as JetStream's does
    when no leader answers (after its retries)."""

    def __init__(self, publisher: Publisher) -> None:
        super().__init__(publisher.js, publisher.source)
        self.publisher = publisher
        self.down = True
        self.refused: list[str] = []
        self.in_flight = 0
        self.waits = 0

    async def publish(self, type_, data, **options):
        if self.down:
            self.refused.append(type_)
            self.waits += self.in_flight == 0  # a refusal that starts while none is in flight waits anew
            self.in_flight += 1
            try:
                await asyncio.sleep(0)  # in flight, as a real wait for the bus would be
            finally:
                self.in_flight -= 1
            raise nats.errors.TimeoutError
        return await self.publisher.publish(type_, data, **options)


def soon(ctx):
    """The app's context with no requeue delay: what is stale later is stale now."""
    return dataclasses.replace(ctx, settings=msgspec.structs.replace(ctx.settings, requeue_after_s=0.0))


async def test_a_task_submitted_while_the_bus_is_down_is_created_and_launched_later(
    app, client, nats_url, nats_creds
) -> None:
    agent = await new_agent(client)
    real = app.state.ctx
    bus = Unanswered(real.publisher)
    app.state.ctx = dataclasses.replace(real, publisher=bus)
    try:
        r = await client.post("/v1/tasks", json={"title": "while the bus is down", "assignee": agent["id"]})
    finally:
        app.state.ctx = real
    assert r.status_code == 201, r.text
    # Every announcement tried, together: one wait for the bus, not one per announcement.
    assert bus.refused == ["task.created", "board.card_moved", "task.status_changed", "worker.launch_run", "run.queued"]
    assert bus.waits == 1
    run_id = r.json()["current_run_id"]
    assert r.json()["status"] == "in_progress"
    run = (await client.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] == "queued" and run["config"]["run_id"] == run_id

    assert await in_app(client, requeue_stale, soon(real)) == 1
    nc = await connect(nats_url, "tests", creds=nats_creds)
    try:
        launch = await nc.jetstream().get_last_msg(CMDS_STREAM, spec("worker.launch_run").subject_for())
    finally:
        await nc.close()
    env = decode_raw(launch.data)
    assert msgspec.json.decode(env.data)["config"]["run_id"] == run_id


async def test_a_claim_whose_run_was_never_stored_is_released_and_dispatched_again(app, client) -> None:
    agent = await new_agent(client)
    r = await client.post("/v1/tasks", json={"title": "claimed, then lost", "assignee": agent["id"]})
    task_id, stored_run = r.json()["id"], r.json()["current_run_id"]
    ctx = app.state.ctx

    async def claim_lost_run(age_s: float) -> None:
        await Task.get_pymongo_collection().update_one(
            {"_id": task_id},
            {"$set": {"current_run_id": "run_never_stored", "updated_at": now() - timedelta(seconds=age_s)}},
        )

    await in_app(client, claim_lost_run, 0.0)
    assert await in_app(client, release_orphans, ctx) == 0  # a claim this young may be a dispatch under way
    await in_app(client, claim_lost_run, 3600.0)
    assert await in_app(client, release_orphans, ctx) == 1
    task = (await client.get(f"/v1/tasks/{task_id}")).json()
    assert task["status"] == "in_progress"
    assert task["current_run_id"] not in ("run_never_stored", stored_run)
    run = (await client.get(f"/v1/runs/{task['current_run_id']}")).json()
    assert run["status"] == "queued" and run["task_id"] == task_id
    assert await in_app(client, release_orphans, ctx) == 0  # a task whose run is stored is left alone

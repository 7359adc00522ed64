"""What one step announces goes out together: a task's POST and a run's ingested verdict each publish
their events at once, in order, and await their acks together — one wait for the bus, not one per
event (real FerretDB and NATS). The stream holds them in the order they were made."""

import asyncio
import dataclasses

import msgspec
import nats.errors
import pytest

from nexus.core_api.runs.ingest import ingest_group
from nexus.events.bus import Publisher, connect
from nexus.events.catalog import CMDS_STREAM, EVENTS_STREAM, spec
from nexus.events.envelope import decode_raw
from tests.core_api.conftest import in_app, new_agent, new_run
from tests.core_api.test_announce_after_store import delivery

pytestmark = pytest.mark.infra

POSTED = ["task.created", "board.card_moved", "task.status_changed", "worker.launch_run", "run.queued"]


class Waits(Publisher):
    """The app's real publisher, counting the waits for the bus: a publish that starts while none is in
    flight starts a new wait; publishes sent together share one."""

    def __init__(self, publisher: Publisher) -> None:
        super().__init__(publisher.js, publisher.source)
        self.publisher = publisher
        self.sent: list[str] = []
        self.in_flight = 0
        self.waits = 0

    async def publish(self, type_, data, **options):
        self.sent.append(type_)
        self.waits += self.in_flight == 0
        self.in_flight += 1
        try:
            return await self.publisher.publish(type_, data, **options)
        finally:
            self.in_flight -= 1


async def _on_stream(nats_url: str, creds: str, task_id: str, run_id: str) -> list[str]:
    """The types of the events about this task or run, in the events stream's order (from its start)."""
    nc = await connect(nats_url, "tests", creds=creds)
    js = nc.jetstream()
    seen: list[str] = []
    try:
        sub = await js.subscribe("nexus.evt.>", stream=EVENTS_STREAM, ordered_consumer=True)
        last = (await js.stream_info(EVENTS_STREAM)).state.last_seq
        while True:
            msg = await sub.next_msg(timeout=10)
            about = msgspec.json.decode(decode_raw(msg.data).data)
            if about.get("task_id") == task_id or about.get("run_id") == run_id:
                seen.append(decode_raw(msg.data).type)
            if msg.metadata.sequence.stream >= last:
                return seen
    finally:
        await nc.close()


async def test_a_tasks_announcements_go_out_together_in_order(app, client, nats_url, nats_creds) -> None:
    agent = await new_agent(client)
    real = app.state.ctx
    waits = Waits(real.publisher)
    app.state.ctx = dataclasses.replace(real, publisher=waits)
    try:
        r = await client.post("/v1/tasks", json={"title": "announced together", "assignee": agent["id"]})
    finally:
        app.state.ctx = real
    assert r.status_code == 201, r.text
    task_id, run_id = r.json()["id"], r.json()["current_run_id"]
    assert waits.sent == POSTED
    assert waits.waits == 1  # one wait for the bus, not one per announcement
    # The stream holds them in the order they were made: created (ready) and its card before the claim.
    assert await _on_stream(nats_url, nats_creds, task_id, run_id) == [
        "task.created",
        "board.card_moved",
        "task.status_changed",
        "run.queued",
    ]
    nc = await connect(nats_url, "tests", creds=nats_creds)
    try:
        launch = await nc.jetstream().get_last_msg(CMDS_STREAM, spec("worker.launch_run").subject_for())
    finally:
        await nc.close()
    assert msgspec.json.decode(decode_raw(launch.data).data)["config"]["run_id"] == run_id


async def test_a_runs_verdict_is_announced_in_one_wait_after_its_writes(app, client) -> None:
    from nexus.events import payloads as p

    run = await new_run(client)
    run_id = run["id"]
    waits = Waits(app.state.ctx.publisher)
    ctx = dataclasses.replace(app.state.ctx, publisher=waits)
    group = [
        delivery(run_id, "run.status", p.RunStatusChanged(status="running"), 1),
        delivery(run_id, "run.status", p.RunStatusChanged(status="succeeded", summary="done"), 2),
    ]
    await in_app(client, ingest_group, ctx, group)
    assert (await client.get(f"/v1/runs/{run_id}")).json()["status"] == "succeeded"
    # Each transition's events, in the order they were made: the run started, its task followed it to done.
    assert waits.sent == ["run.started", "task.status_changed", "board.card_moved", "run.succeeded"]
    assert waits.waits == 1


async def test_one_refused_announcement_does_not_hold_back_the_others(app, client) -> None:
    """The bus refusing one announcement (a stream without a leader) does not keep the rest from the
    bus; the refusal is raised once all have settled, and the POST still answers 201."""

    class RefusesLaunch(Waits):
        async def publish(self, type_, data, **options):
            if type_ == "worker.launch_run":
                self.sent.append(type_)
                await asyncio.sleep(0)  # in flight beside the others, as a real wait would be
                raise nats.errors.TimeoutError
            return await super().publish(type_, data, **options)

    agent = await new_agent(client)
    real = app.state.ctx
    bus = RefusesLaunch(real.publisher)
    app.state.ctx = dataclasses.replace(real, publisher=bus)
    try:
        r = await client.post("/v1/tasks", json={"title": "launch refused", "assignee": agent["id"]})
    finally:
        app.state.ctx = real
    assert r.status_code == 201, r.text
    assert bus.sent == POSTED
    assert (await client.get(f"/v1/runs/{r.json()['current_run_id']}")).json()["status"] == "queued"

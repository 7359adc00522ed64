"""A killed core-api's fetched-but-unacknowledged run events are stored by the next instance at once
(real NATS and FerretDB), not when JetStream redelivers them after the ack wait — by then the run has
long been final, and its events and session chain would have looked incomplete all that time."""

import asyncio
import uuid

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from nexus.core_api.context import Context
from nexus.core_api.runs.ingest import handle_run_event, ingest_group
from nexus.db import run_events
from nexus.domain.ledger import seal
from nexus.domain.sessions import NoteChange
from nexus.events.bus import Publisher, connect
from nexus.events.catalog import RUNS_STREAM
from nexus.events.payloads import RunLog, RunStatusChanged, SessionChanged, SessionOpened
from nats.js.api import AckPolicy, ConsumerConfig
from tests.core_api.conftest import consume_until, in_app, new_run

pytestmark = pytest.mark.infra

ACK_WAIT_S = 3600.0  # far beyond the test: a held message is only ever back by redelivery if the fix is gone


@pytest.fixture
async def tools(nats_url: str, nats_creds: str):
    nc = await connect(nats_url, "test-reclaim", creds=nats_creds)
    yield nc
    await nc.close()


async def _consume_until_stored(
    ctx: Context, nats: tuple[str, str], durable: str, subject: str, run_id: str, want: set[str]
) -> set[str]:
    """The restarted core-api's run-event consumer (as background.py starts it), on the app's loop,
    until every wanted event is stored. It reads a durable of the test's own (as the tests' NATS user):
    core-api's own name is shared on the test server."""
    stored: set[str] = set()

    async def done() -> bool:
        nonlocal stored
        stored = await run_events.stored_ids(run_id)
        return want <= stored

    await consume_until(
        nats,
        "test-reclaim-consumer",
        done,
        stream=RUNS_STREAM,
        durable=durable,
        subject=subject,
        ack_wait_s=ACK_WAIT_S,
        handler=lambda d: handle_run_event(ctx, d),
        group_handler=lambda ds: ingest_group(ctx, ds),
        batch=512,
        concurrency=4,
        partition=lambda s: s.split(".")[2],
        max_deliver=20,
        reclaim=True,
    )
    return stored


async def test_a_dead_instances_unacked_events_are_stored_at_restart(
    client: AsyncTestClient, app: Litestar, tools, nats_url: str, nats_creds: str
) -> None:
    run = await new_run(client)
    run_id, sid = run["id"], run["session_id"]
    js = tools.jetstream()
    pub = Publisher(js, "test")
    durable, subject = f"core-api-runs-{uuid.uuid4().hex[:8]}", f"nexus.run.{run_id}.>"
    await js.add_consumer(
        RUNS_STREAM,
        ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_S,
            max_deliver=20,
            filter_subject=subject,
        ),
    )
    # What the run reported before core-api was killed: it starts, opens its session, records changes, logs.
    chain = seal([NoteChange(timestamp="2026-01-01T00:00:00Z", message=f"note {i}") for i in range(3)])
    held = [
        await pub.publish("run.status", RunStatusChanged(status="running"), run_id=run_id),
        await pub.publish("run.session", SessionOpened(session_id=sid, project_path="/w"), run_id=run_id),
        *[await pub.publish("run.note", SessionChanged(session_id=sid, change=c), run_id=run_id) for c in chain],
        await pub.publish("run.log", RunLog(message="working"), run_id=run_id),
    ]
    # The core-api about to be killed fetches them all, stores none, acknowledges none: SIGKILL.
    dead = await js.pull_subscribe(subject, durable=durable, stream=RUNS_STREAM)
    fetched = []
    for _ in range(len(held)):  # a fetch may hand out fewer than asked for
        if len(fetched) < len(held):
            fetched += await dead.fetch(len(held) - len(fetched), timeout=10)
    assert [m.metadata.num_delivered for m in fetched] == [1] * len(held)
    await dead.unsubscribe()
    # While it is down the run finishes.
    done = await pub.publish("run.status", RunStatusChanged(status="succeeded", summary="done"), run_id=run_id)

    want = {e.id for e in [*held, done]}
    stored = await in_app(
        client, _consume_until_stored, app.state.ctx, (nats_url, nats_creds), durable, subject, run_id, want
    )

    assert want - stored == set(), "events the killed instance held were not stored by its successor"
    # Still held by the server: stored from the stream, not redelivered (the last event's ack, sent as the
    # consumer stopped, is applied by the server a moment later).
    for _ in range(100):
        info = await js.consumer_info(RUNS_STREAM, durable)
        if info.num_ack_pending == len(held):
            break
        await asyncio.sleep(0.02)
    assert info.num_ack_pending == len(held)
    r = await client.get(f"/v1/runs/{run_id}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "succeeded", body
    (session,) = body["sessions"]
    assert [(a["attempt"], len(a["changes"]), a["verified"]) for a in session["attempts"]] == [(1, 3, True)]
    await js.delete_consumer(RUNS_STREAM, durable)

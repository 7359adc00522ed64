"""core-api's run-event consumer as background.py starts it (real NATS and FerretDB): a backlog is read
in large fetches, and every run's group of a fetch joins one group commit, so a fetch's events go out as
one chunk per run in one insert, not in rounds one after the other."""

import asyncio
import uuid

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from nats.js.api import DeliverPolicy

from nexus.core_api.context import Context
from nexus.core_api.runs import known
from nexus.core_api.runs.ingest import RUN_EVENTS_CONSUMER, handle_run_event, ingest_group
from nexus.db import run_events
from nexus.events.bus import Publisher, connect
from nexus.events.catalog import RUNS_STREAM
from nexus.events.consumer import pull_config
from nexus.events.payloads import RunLog
from tests.core_api.conftest import consume_until, in_app

pytestmark = pytest.mark.infra

RUNS = 60  # more runs than one fetch's groups were once handled at a time (32)
EACH = 12  # 720 events waiting: more than a fetch once held (512)


async def _ingest_until_stored(ctx: Context, nats: tuple[str, str], durable: str, runs: list[str]) -> int:
    """core-api's run-event consumer on the app's loop, reading a durable of the test's own, until every
    run has its events stored; returns how many runs have."""
    stored = 0

    async def done() -> bool:
        nonlocal stored
        stored = len(await run_events.collection().distinct("run_id", {"run_id": {"$in": runs}}))
        return stored == len(runs)

    await consume_until(
        nats,
        "test-run-event-fetch",
        done,
        durable=durable,
        handler=lambda d: handle_run_event(ctx, d),
        group_handler=lambda ds: ingest_group(ctx, ds),
        **RUN_EVENTS_CONSUMER,
    )
    return stored


async def test_every_run_of_a_fetch_shares_one_insert(
    client: AsyncTestClient, app: Litestar, nats_url: str, nats_creds: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = [f"run_{uuid.uuid4().hex}" for _ in range(RUNS)]
    for run_id in runs:
        known.remember(run_id)  # runs of this core-api: their events are stored without a lookup
    nc = await connect(nats_url, "test-run-event-fetch-pub", creds=nats_creds)
    js = nc.jetstream()
    durable = f"core-api-runs-{uuid.uuid4().hex[:8]}"
    # The test's durable starts at its own events (the stream holds other tests' too), with core-api's config.
    config = pull_config(
        durable=durable,
        subject=RUN_EVENTS_CONSUMER["subject"],
        max_deliver=RUN_EVENTS_CONSUMER["max_deliver"],
        ack_wait_s=30,
        max_ack_pending=RUN_EVENTS_CONSUMER["max_ack_pending"],
    )
    config.deliver_policy = DeliverPolicy.NEW
    await js.add_consumer(RUNS_STREAM, config)
    pub = Publisher(js, "test")
    for i in range(EACH):
        await asyncio.gather(*(pub.publish("run.log", RunLog(message=f"step {i}"), run_id=r) for r in runs))

    inserts: list[set[str]] = []  # the runs each insert of chunks carried
    insert_chunks = run_events.insert_chunks

    async def counted(coll, docs):  # type: ignore[no-untyped-def]
        inserts.append({d["run_id"] for d in docs})
        return await insert_chunks(coll, docs)

    monkeypatch.setattr(run_events, "insert_chunks", counted)
    try:
        stored = await in_app(client, _ingest_until_stored, app.state.ctx, (nats_url, nats_creds), durable, runs)
    finally:
        await js.delete_consumer(RUNS_STREAM, durable)
        await nc.close()

    assert stored == RUNS
    # One fetch brought all 720 events (they were waiting): its 60 runs' chunks went out in ONE insert,
    # each run's 12 events in one chunk.
    ours = [carried & set(runs) for carried in inserts]
    assert [len(c) for c in ours if c] == [RUNS], "a fetch's runs were stored in several rounds"
    chunks = await in_app(client, lambda: run_events.collection().find({"run_id": {"$in": runs}}).to_list(None))
    assert sorted(len(run_events._events(c)) for c in chunks) == [EACH] * RUNS

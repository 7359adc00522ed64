"""FastStream subscribers built with nexus.events.faststream behave like consume(): a durable pull
consumer with explicit ack, msgspec payloads from the catalog, poison and exhausted messages in the DLQ,
and the subscriber lives on."""

import asyncio
import uuid

import msgspec
import pytest
from faststream.nats import NatsBroker

from nexus.events.bus import Publisher, connect, ensure_streams
from nexus.events.faststream import broker_options
from nexus.events.catalog import DLQ_STREAM, RUNS_STREAM
from nexus.events.consumer import Delivery
from nexus.events.envelope import decode_raw
from nexus.events.faststream import durable_subscriber
from nexus.events.payloads import DeadLetter, RunLog

pytestmark = pytest.mark.infra


async def test_faststream_subscriber_decodes_retries_and_dead_letters(nats_url: str, nats_creds: str) -> None:
    nc = await connect(nats_url, "test-faststream", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    run_id = f"run_{uuid.uuid4().hex}"
    seen: list[tuple[str, int]] = []
    handled = asyncio.Event()

    async def handler(d: Delivery) -> None:
        assert isinstance(d.payload, RunLog)
        seen.append((d.payload.message, d.deliveries))
        if d.payload.message == "boom":
            raise RuntimeError("handler broke")
        if d.payload.message == "after":
            handled.set()

    broker = NatsBroker(**broker_options(nats_url, "tools", nats_creds))
    durable_subscriber(
        broker,
        subject=f"nexus.run.{run_id}.>",
        stream=RUNS_STREAM,
        durable=f"t-{uuid.uuid4().hex[:8]}",
        max_deliver=3,
        ack_wait_s=2,
    )(handler)
    await broker.start()
    try:
        subject = f"nexus.run.{run_id}.log"
        dlq = await js.subscribe(f"nexus.dlq.{subject}", stream=DLQ_STREAM, ordered_consumer=True)
        await js.publish(subject, b"{not json")
        pub = Publisher(js, "test")
        await pub.publish("run.log", RunLog(message="boom"), run_id=run_id)
        await pub.publish("run.log", RunLog(message="after"), run_id=run_id)
        letters = [
            msgspec.json.decode(decode_raw((await dlq.next_msg(timeout=30)).data).data, type=DeadLetter)
            for _ in range(2)
        ]
        await asyncio.wait_for(handled.wait(), 30)
    finally:
        await broker.stop()
        await nc.drain()
    assert letters[0].reason.startswith("undecodable") and letters[0].body == "{not json"
    assert "failed 3 times" in letters[1].reason and "handler broke" in letters[1].reason
    assert [n for m, n in seen if m == "boom"] == [1, 2, 3]
    assert [n for m, n in seen if m == "after"] == [1]

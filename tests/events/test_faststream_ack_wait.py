"""A FastStream subscriber's durable (core-api's commands, the edges' events) redelivers what a dead process
was handed within seconds, not after a 30 s ack wait, and a handler still at work is not redelivered
meanwhile: it says it is in progress. A durable made with the old ack wait is brought up to date."""

import asyncio
import uuid

import pytest
from faststream.nats import NatsBroker
from nats.js.api import AckPolicy, ConsumerConfig

from nexus.events.bus import Publisher, connect, ensure_streams
from nexus.events.catalog import RUNS_STREAM
from nexus.events.consumer import Delivery
from nexus.events.faststream import ACK_WAIT_S, broker_options, durable_subscriber, durables_of, ensure_durables
from nexus.events.payloads import RunLog

pytestmark = pytest.mark.infra


async def test_what_a_dead_subscriber_was_handed_comes_back_soon(nats_url: str, nats_creds: str) -> None:
    nc = await connect(nats_url, "test-ack-wait", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    run_id, durable = f"run_{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex[:8]}"
    subject = f"nexus.run.{run_id}.>"
    handled = asyncio.Event()

    async def handler(d: Delivery) -> None:
        handled.set()

    broker = NatsBroker(**broker_options(nats_url, "tools", nats_creds))
    durable_subscriber(broker, subject=subject, stream=RUNS_STREAM, durable=durable)(handler)
    await ensure_durables(js, durables_of(broker))
    # The process that dies: its pull request is handed the message, which it never acknowledges.
    dead = await connect(nats_url, "test-ack-wait-dead", creds=nats_creds)
    sub = await dead.jetstream().pull_subscribe_bind(durable, stream=RUNS_STREAM)
    await Publisher(js, "test").publish("run.log", RunLog(message="held by the dead"), run_id=run_id)
    assert len(await sub.fetch(1, timeout=10)) == 1
    await dead.close()
    await broker.start()
    try:
        # Well under the old 30 s ack wait, well over the new one: a generous bound on a wait for state.
        await asyncio.wait_for(handled.wait(), 6 * ACK_WAIT_S - 10)
    finally:
        await broker.stop()
        await nc.drain()


async def test_a_handler_at_work_longer_than_the_ack_wait_is_not_handed_the_message_again(
    nats_url: str, nats_creds: str
) -> None:
    nc = await connect(nats_url, "test-ack-wait", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    run_id = f"run_{uuid.uuid4().hex}"
    deliveries: list[int] = []
    done = asyncio.Event()

    async def slow(d: Delivery) -> None:
        deliveries.append(d.deliveries)
        await asyncio.sleep(3.5)  # past its ack wait of 1 s, three times over
        done.set()

    broker = NatsBroker(**broker_options(nats_url, "tools", nats_creds))
    durable_subscriber(
        broker, subject=f"nexus.run.{run_id}.>", stream=RUNS_STREAM, durable=f"t-{uuid.uuid4().hex[:8]}", ack_wait_s=1
    )(slow)
    await broker.start()
    try:
        await Publisher(js, "test").publish("run.log", RunLog(message="slow"), run_id=run_id)
        await asyncio.wait_for(done.wait(), 60)
        await asyncio.sleep(1.5)  # a redelivery, were there one, would be handled by now
    finally:
        await broker.stop()
        await nc.drain()
    assert deliveries == [1]


async def test_a_durable_made_with_the_old_ack_wait_is_updated(nats_url: str, nats_creds: str) -> None:
    nc = await connect(nats_url, "test-ack-wait", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    run_id, durable = f"run_{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex[:8]}"
    try:
        old = ConsumerConfig(
            durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=30, filter_subject=f"nexus.run.{run_id}.>"
        )
        await js.add_consumer(RUNS_STREAM, old)
        broker = NatsBroker(**broker_options(nats_url, "tools", nats_creds))
        durable_subscriber(broker, subject=f"nexus.run.{run_id}.>", stream=RUNS_STREAM, durable=durable)(
            lambda d: asyncio.sleep(0)
        )
        await ensure_durables(js, durables_of(broker))
        assert (await js.consumer_info(RUNS_STREAM, durable)).config.ack_wait == ACK_WAIT_S
    finally:
        await nc.drain()

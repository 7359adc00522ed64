"""A fetch is bounded by bytes as well as by count, on a real JetStream: a flood of large messages
comes in several fetches of a few MiB each, never all at once, and the largest message the server
accepts still gets through however small the bound."""

import asyncio
import contextlib
import uuid

import pytest

from nexus.events.bus import connect, ensure_streams
from nexus.events.catalog import RUNS_STREAM
from nexus.events.consumer import fetched, pull_config, pulling
from nexus.events.pull import FETCH_MAX_BYTES

pytestmark = pytest.mark.infra

BIG = 768 * 1024  # a run event carrying a large output, under the server's 1 MiB max_payload


@pytest.fixture
async def js(nats_url, nats_creds):
    nc = await connect(nats_url, "test-fetch-bytes", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    yield js
    await nc.drain()


async def _batches(js, subject: str, count: int, size: int, **options) -> list[list[int]]:
    """The sizes of the messages of each batch `fetched` hands out (a count of 2,048, as ingestion asks)."""
    config = pull_config(
        durable=f"t-{uuid.uuid4().hex[:8]}", subject=subject, max_deliver=3, ack_wait_s=30, max_ack_pending=8000
    )
    out: list[list[int]] = []
    stop = asyncio.Event()
    async with pulling(js, stream=RUNS_STREAM, subject=subject, config=config) as sub:
        batches = fetched(sub, config.durable_name or "", stop, lambda: 2048, **options)
        async with contextlib.aclosing(batches) as each:
            async for msgs in each:
                out.append([len(m.data) for m in msgs])
                for m in msgs:
                    await m.ack()
                if sum(map(len, out)) >= count:
                    break
    return out


async def test_a_flood_of_large_messages_comes_in_fetches_bounded_by_bytes(js) -> None:
    subject = f"nexus.run.run_{uuid.uuid4().hex[:10]}.log"
    count = 24  # 18 MiB in all
    for _ in range(count):
        await js.publish(subject, b"x" * BIG)
    batches = await _batches(js, subject, count, BIG)
    assert sum(map(len, batches)) == count
    # before: one fetch of all 24 (the count of 2,048 was the only bound), 18 MiB in memory at once
    assert len(batches) >= 3
    assert all(sum(b) <= FETCH_MAX_BYTES for b in batches)


async def test_the_largest_message_gets_through_whatever_the_bound(js) -> None:
    subject = f"nexus.run.run_{uuid.uuid4().hex[:10]}.log"
    payload = js._nc.max_payload - 512  # the largest body the server takes, with room for the headers
    await js.publish(subject, b"y" * payload)
    await js.publish(subject, b"small")
    batches = await _batches(js, subject, 2, payload, max_bytes=1024)
    assert [n for b in batches for n in b] == [payload, 5]

"""The run feed (one consumer per core-api process) and the run streams that follow it, on a real NATS:
a stream joining a run under way gets every event once, in order, whichever part it came from; a slow
stream ends with an `error` event without holding up the others and resumes losing nothing; the feed's
consumer, lost, is made again from where it was."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from litestar.response import ServerSentEventMessage

from nexus.core_api.runs import feed as feed_module
from nexus.core_api.runs.feed import RunFeed
from nexus.core_api.runs.stream import REPLAY_GETS, run_stream
from nexus.core_api.runs.stream import STREAM_ERROR
from nexus.events.bus import connect, ensure_streams
from nexus.events.catalog import RUNS_STREAM
from nexus.events.envelope import encode, make_envelope
from tests.conftest import creds_of

pytestmark = pytest.mark.infra


@pytest.fixture
async def feed(nats_url: str, nats_auth) -> AsyncIterator[RunFeed]:
    nc = await connect(nats_url, "core-api", creds=creds_of(nats_auth, "core-api"))
    await ensure_streams(nc.jetstream())
    f = RunFeed(nc, nc.jetstream())
    try:
        yield f
    finally:
        await f.close()
        await nc.close()


@pytest.fixture
async def runner(nats_url: str, nats_creds: str):
    """Publishes a run's events as its runner would; returns each one's stream sequence."""
    nc = await connect(nats_url, "test-run-feed-runner", creds=nats_creds)
    js = nc.jetstream()

    async def publish(run_id: str, kind: str, data: dict) -> int:
        env = encode(make_envelope(f"run.{kind}", data, source="agent-runner"))
        return (await js.publish(f"nexus.run.{run_id}.{kind}", env)).seq

    try:
        yield publish
    finally:
        await nc.close()


def stream_of(feed: RunFeed, run_id: str, after: int, ended: asyncio.Event):
    async def stored_final() -> bool:
        return ended.is_set()

    return run_stream(feed, run_id, after_seq=after, keepalive_s=0.2, stored_final=stored_final, open_wait_s=5)


async def ids(stream: AsyncIterator[ServerSentEventMessage]) -> list[int]:
    """Every event id until the stream ends by itself (bounded by a count of messages, not by time)."""
    out = []
    n = 0
    async for m in stream:
        assert m.event != STREAM_ERROR, m.data
        if m.id is not None:
            out.append(int(m.id))
        n += 1
        assert n < 2000
    return out


async def next_event(stream: AsyncIterator[ServerSentEventMessage]) -> int:
    """The next event's id, past comments (a feed still being made says the stream waits)."""
    async for m in stream:
        if m.id is not None:
            return int(m.id)
    raise AssertionError("the stream ended before an event")


async def test_streams_joining_a_run_under_way_get_each_event_once_in_order(feed: RunFeed, runner) -> None:
    run, later = uuid.uuid4().hex, uuid.uuid4().hex
    ended = asyncio.Event()
    seqs = [await runner(run, "log", {"message": f"before {i}"}) for i in range(10)]  # before the feed exists

    async def keep_publishing() -> None:
        for i in range(30):
            seqs.append(await runner(run, "log", {"message": f"during {i}"}))
            await asyncio.sleep(0.005)
        seqs.append(await runner(run, "status", {"status": "succeeded"}))
        ended.set()

    publishing = asyncio.create_task(keep_publishing())
    first = asyncio.create_task(ids(stream_of(feed, run, 0, ended)))  # starts the feed: the past read by gets
    resumed = asyncio.create_task(ids(stream_of(feed, run, seqs[4], ended)))  # a reconnect mid-way
    await asyncio.sleep(0.05)
    # A run whose events all came after the feed started: its past is what the feed kept, no request.
    later_seqs = [await runner(later, "log", {"message": f"l{i}"}) for i in range(5)]
    later_seqs.append(await runner(later, "status", {"status": "failed"}))
    stored = asyncio.Event()
    stored.set()
    from_kept = await ids(stream_of(feed, later, 0, stored))
    await publishing
    assert await first == seqs
    assert await resumed == seqs[5:]
    assert from_kept == later_seqs


async def test_a_slow_stream_ends_with_an_error_and_resumes_losing_nothing(
    feed: RunFeed, runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "QUEUE_MAX", 5)
    run = uuid.uuid4().hex
    ended = asyncio.Event()
    slow = stream_of(feed, run, 0, ended)
    assert (await anext(slow)).comment == "connected"
    first = asyncio.create_task(next_event(slow))  # joined, and waiting for the run's first event
    fast = asyncio.create_task(ids(stream_of(feed, run, 0, ended)))
    await asyncio.sleep(0.2)
    seqs = [await runner(run, "log", {"message": f"line {i}"}) for i in range(20)]
    seqs.append(await runner(run, "status", {"status": "succeeded"}))
    ended.set()
    assert await fast == seqs  # the slow one held up neither the feed nor the other stream
    got = [await first]
    last = None
    async for m in slow:  # what it had waiting, then the end that tells its client to reconnect
        if m.id is not None:
            got.append(int(m.id))
        last = m
    assert last is not None and last.event == STREAM_ERROR and last.retry, last
    assert "reconnect" in json.loads(str(last.data))["error"]
    got += await ids(stream_of(feed, run, got[-1], ended))  # the client resumes with Last-Event-ID
    assert got == seqs


async def test_a_lost_feed_consumer_is_made_again_from_where_it_was(
    feed: RunFeed, runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "HEARTBEAT_S", 0.3)
    run = uuid.uuid4().hex
    ended = asyncio.Event()
    stream = stream_of(feed, run, 0, ended)
    reading = asyncio.create_task(ids(stream))
    seqs = [await runner(run, "log", {"message": f"line {i}"}) for i in range(2)]
    for _ in range(100):  # the feed's consumer made (its answer may come after its first messages)
        if feed.last_seq == seqs[-1] and feed._consumer is not None:
            break
        await asyncio.sleep(0.05)
    lost = feed._consumer
    assert lost is not None
    await feed.js.delete_consumer(RUNS_STREAM, lost)  # as a server restart or a cleanup would
    seqs += [await runner(run, "log", {"message": f"after {i}"}) for i in range(2)]
    seqs.append(await runner(run, "status", {"status": "succeeded"}))
    for _ in range(200):  # stored once the feed heard it (else the stream would end at a keep-alive)
        if feed.last_seq == seqs[-1]:
            break
        await asyncio.sleep(0.05)
    ended.set()
    assert await asyncio.wait_for(reading, 30) == seqs
    again = feed._consumer
    assert again is not None and again != lost
    # Made from the sequence after the last one handed out, never from the stream's start.
    info = await feed.js.consumer_info(RUNS_STREAM, again)
    assert info.config.opt_start_seq is not None and info.config.opt_start_seq > seqs[1]


async def test_a_past_of_exactly_the_gets_a_stream_reads_one_by_one_ends_there(feed: RunFeed, runner) -> None:
    """Older than the feed and no longer than what is read by gets: no consumer waits for a message that
    never comes (the stream would say it waits, then end with an error)."""
    run = uuid.uuid4().hex
    seqs = [await runner(run, "log", {"message": f"line {i}"}) for i in range(REPLAY_GETS - 1)]
    seqs.append(await runner(run, "status", {"status": "succeeded"}))
    await runner(uuid.uuid4().hex, "log", {"message": "another run's, after it"})
    stored = asyncio.Event()
    stored.set()
    assert await ids(stream_of(feed, run, 0, stored)) == seqs

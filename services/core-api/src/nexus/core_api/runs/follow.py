"""A run's event stream: what came before it joined the process's run feed, then what the feed hands it.

The feed is joined first, and it tells from which sequence it hands the stream every message of the run
(`Listener.after`) and which older ones it still holds (`Listener.kept`); only what is older still is read
from JetStream, by message gets. Nothing falls between the parts, and a sequence already sent is never
sent again, so the ids (stream sequences) stay exact for a client resuming with Last-Event-ID."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import nats.errors
import nats.js.errors
from litestar.response import ServerSentEventMessage
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from nexus.core_api.runs.feed import FeedMsg, Listener, RunFeed, feed_msg
from nexus.core_api.runs.stream import (
    OPEN_WAIT_S,
    SETTLE_POLL_S,
    SETTLE_WAIT_S,
    SETTLING,
    UNAVAILABLE,
    WAITING,
    stream_error,
)
from nexus.events.catalog import run_filter

log = logging.getLogger("nexus.core_api.sse")

# A replay older than the feed's memory reads up to this many messages one get at a time (each costs
# nats-server ~0.3 ms); a longer one reads the rest through a consumer of its own.
REPLAY_GETS = 4
REPLAY_WAIT_S = 5.0


async def _replay_by_consumer(
    js: JetStreamContext, stream: str, subject: str, start: int, upto: int
) -> AsyncIterator[FeedMsg]:
    queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=1024)
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start, inactive_threshold=60.0
    )
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, config=config, cb=queue.put)
    try:
        while True:
            try:
                msg = await asyncio.wait_for(queue.get(), REPLAY_WAIT_S)
            except TimeoutError:
                raise nats.errors.TimeoutError from None  # the caller waits and tries again from what it sent
            meta = msg.metadata
            if meta.sequence.stream > upto:
                return
            yield feed_msg(meta.sequence.stream, msg.subject, msg.data)
            if meta.sequence.stream == upto or meta.num_pending == 0:  # nothing stored after it: the past is read
                return
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sub.unsubscribe(), 2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(js.delete_consumer(stream, sub._consumer), 2)


async def replay(js: JetStreamContext, stream: str, subject: str, after: int, upto: int) -> AsyncIterator[FeedMsg]:
    """The stored messages on `subject` with a sequence in (after, upto], in order, read without a consumer
    (the stream leader's message get, next by subject) unless there are more than REPLAY_GETS."""
    cursor, got = after + 1, 0
    while cursor <= upto:
        try:
            raw = await js.get_msg(stream, seq=cursor, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return
        if raw.seq is None or raw.seq > upto:
            return
        if got == REPLAY_GETS:  # a long past: the rest through a consumer, which delivers this one first
            async for m in _replay_by_consumer(js, stream, subject, raw.seq, upto):
                yield m
            return
        yield feed_msg(raw.seq, raw.subject or subject, raw.data or b"")
        cursor, got = raw.seq + 1, got + 1


async def _past(feed: RunFeed, listener: Listener, sent: int) -> AsyncIterator[FeedMsg]:
    """What came before the stream joined the feed: from JetStream what the feed no longer holds, then
    what it held."""
    assert listener.after is not None  # joined
    if sent < listener.kept_after:
        upto = min(listener.kept_after, listener.after)
        async for m in replay(feed.js, feed.stream, run_filter(listener.run_id), sent, upto):
            yield m
    for seq, subject, data in listener.kept:
        if seq <= listener.after:
            yield feed_msg(seq, subject, data)


async def run_stream(
    feed: RunFeed,
    run_id: str,
    *,
    after_seq: int,
    keepalive_s: float,
    stored_final: Callable[[], Awaitable[bool]],
    open_wait_s: float = OPEN_WAIT_S,
) -> AsyncIterator[ServerSentEventMessage]:
    """A run's events: replay from after_seq, then follow; end after the run's final status has been sent,
    nothing else of the run is waiting and its end is stored — waited for up to SETTLE_WAIT_S. A run ended
    with nothing from its runner on the stream (cancelled before it launched, given up after its attempts
    crashed) ends its stream at the next keep-alive. While JetStream cannot answer (no leader yet), the
    stream stays open with comments and tries again for up to open_wait_s. A client too slow for its
    run's events ends with an `error` event and resumes with Last-Event-ID."""
    yield ServerSentEventMessage(comment="connected")
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + open_wait_s
    listener = feed.join(run_id)
    sent, final_seen, pause = after_seq, False, 0.2
    try:
        while True:  # the past, tried again from what was sent while JetStream cannot answer
            try:
                if listener.after is None:
                    await asyncio.wait_for(listener.joined.wait(), pause)
                async for m in _past(feed, listener, sent):
                    if m.seq > sent:
                        sent, final_seen = m.seq, final_seen or m.final
                        if m.type is not None:
                            yield ServerSentEventMessage(data=m.data.decode(), event=m.type, id=str(m.seq))
                break
            except (TimeoutError, *UNAVAILABLE) as exc:
                if loop.time() >= give_up_at:
                    log.warning("a run's event stream stayed unavailable for %.0f s: %r", open_wait_s, exc)
                    yield stream_error("the event stream is unavailable; reconnect to resume")
                    return
                yield ServerSentEventMessage(comment=WAITING)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
        async for out in _live(listener, sent, final_seen, keepalive_s, stored_final):
            yield out
    finally:
        feed.leave(listener)


async def _live(
    listener: Listener,
    sent: int,
    final_seen: bool,
    keepalive_s: float,
    stored_final: Callable[[], Awaitable[bool]],
) -> AsyncIterator[ServerSentEventMessage]:
    """The rest of a run's stream, from what the feed hands its listener."""
    loop = asyncio.get_running_loop()
    settle_by: float | None = None  # once the runner's end is sent: when to stop waiting for it to be stored

    async def ended() -> bool:
        """The run's end is stored, or waited for long enough."""
        return await stored_final() or (settle_by is not None and loop.time() >= settle_by)

    while True:
        if listener.queue.empty():
            if listener.overflowed:  # a client too slow: it resumes from its last id, the feed never waited
                yield stream_error("the stream fell behind the run's events; reconnect to resume")
                return
            if final_seen and settle_by is None:  # nothing of the run waits after its final status
                if await ended():
                    return
                settle_by = loop.time() + SETTLE_WAIT_S
                yield ServerSentEventMessage(comment=SETTLING)
        try:
            # Once the run has ended, only what the feed already holds is left to send.
            m = await asyncio.wait_for(listener.queue.get(), SETTLE_POLL_S if final_seen else keepalive_s)
        except TimeoutError:
            if final_seen:
                if await ended():
                    return
                continue
            if await stored_final():
                return
            yield ServerSentEventMessage(comment="keep-alive")
            continue
        if m.seq > sent:
            sent, final_seen = m.seq, final_seen or m.final
            if m.type is not None:
                yield ServerSentEventMessage(data=m.data.decode(), event=m.type, id=str(m.seq))

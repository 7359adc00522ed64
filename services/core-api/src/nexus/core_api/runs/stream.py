"""Server-sent events straight from JetStream: the event id is the stream sequence, so a client that
reconnects with Last-Event-ID resumes exactly after the last event it saw, minutes later or not. A run's
stream (`run_stream`) follows the process's run feed (`feed.py`); the system's streams have a consumer
each (`jetstream_events`)."""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from litestar.params import Parameter

from litestar.response import ServerSentEventMessage
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

import msgspec
import nats.errors
import nats.js.errors

from nexus.core_api.errors import DomainError
from nexus.core_api.workflow import ends
from nexus.db.documents import Run
from nexus.domain.runs import RUN_FINAL, RunStatus
from nexus.core_api.runs.feed import FINAL_NAMES, FeedMsg, Listener, RunFeed, feed_msg
from nexus.events.catalog import EVENTS_STREAM, run_filter

log = logging.getLogger("nexus.core_api.sse")

# What a JetStream API call meets while the cluster has no leader to answer it (a node lost, a
# restart, an election): it passes. Anything else (a stream that does not exist, a bad request) does not.
UNAVAILABLE = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError)
# How long a stream waits for JetStream to answer before it ends with an `error` event; the client
# reconnects with Last-Event-ID after `retry` and loses nothing.
OPEN_WAIT_S = 60.0
RECONNECT_MS = 2000
STREAM_ERROR = "error"
# A run's stream ends when its end is stored, not when the runner claims it: a client that reads the
# run after the stream ended sees it final. How long after the runner's final status the stream waits
# for that (core-api's ingestion stores it in milliseconds unless it is down), and how often it looks.
SETTLE_WAIT_S = 10.0
SETTLE_POLL_S = 0.05
SETTLING = "waiting for the run's end to be stored"
WAITING = "waiting for the event stream"


def not_an_event(m: ServerSentEventMessage) -> bool:
    """A comment (connected, keep-alive, waiting) or the stream's own `error`: callers that reshape
    events pass these through as they are."""
    return m.event is None or m.event == STREAM_ERROR


# The largest stream sequence a client may resume after: JetStream's sequences are unsigned 64-bit
# and the resume starts one past it.
MAX_SEQ = 2**63 - 1
LAST_EVENT_ID = "Last-Event-ID"
# A stream sequence given in a query (where a page's stream starts).
StreamSeq = Annotated[int, Parameter(ge=0, le=MAX_SEQ, description="a stream sequence to start after")]


def parse_last_event_id(value: str | None) -> int:
    """The stream sequence a reconnecting client resumes after (0: from the start). Every id this
    server sends is a sequence, so anything else was never one of ours and is refused by name
    before the stream opens (past JetStream's range it would break the stream under way)."""
    if not value:
        return 0
    if not (value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= MAX_SEQ):
        raise DomainError(422, f"not a stream sequence (0 to {MAX_SEQ}): {value[:40]!r}", field=LAST_EVENT_ID)
    return int(value)


# Where a domain event's subject is `nexus.evt.<its type>` (the catalog's rule for the events stream).
TYPED_SUBJECTS = "nexus.evt."


def type_subjects(subject: str, types: set[str] | None) -> list[str] | None:
    """The subjects of `types` when `subject` is every domain event (`nexus.evt.>`), for the consumer's own
    filter: the server then skips what the client does not follow, so a filtered replay of a long retention
    reads only its own events. Subjects a broader one covers are left out (JetStream refuses overlapping
    filters). None: no filter of its own (`subject` is used whole, and the types are checked here only)."""
    if not types or subject != f"{TYPED_SUBJECTS}>":
        return None
    prefixes = sorted(t[:-1] for t in types if t.endswith(".*"))
    kept: list[str] = []
    for p in prefixes:  # sorted: a prefix comes before every longer one it covers
        if not any(p.startswith(q) for q in kept):
            kept.append(p)
    exact = sorted(t for t in types if not t.endswith("*") and not any(t.startswith(q) for q in kept))
    return [f"{TYPED_SUBJECTS}{p}>" for p in kept] + [f"{TYPED_SUBJECTS}{t}" for t in exact]


def run_stored_final(run_id: str, status_at_open: str) -> Callable[[], Awaitable[bool]]:
    """Whether the run's end is stored: known when the stream opened on an ended run, or at once when this
    process stored it or heard a core-api announce it; else read from the database (not a cache that may
    lag it) at most every STORED_READ_S, starting STORED_READ_S after the first ask."""
    ended_at_open = status_at_open in FINAL_NAMES
    read_at: float | None = None  # the database is first read STORED_READ_S after the first ask

    async def final() -> bool:
        nonlocal read_at
        if ended_at_open or ends.known_ended(run_id):
            return True
        now = time.monotonic()
        if read_at is None:
            read_at = now
        if now - read_at < ends.STORED_READ_S:
            return False
        read_at = now
        stored = await Run.get(run_id)
        return stored is None or RunStatus(stored.status) in RUN_FINAL

    return final


def stream_error(text: str) -> ServerSentEventMessage:
    """The stream's last message: its client reconnects after `retry` with Last-Event-ID, losing nothing."""
    data = msgspec.json.encode({"error": text}).decode()
    return ServerSentEventMessage(data=data, event=STREAM_ERROR, retry=RECONNECT_MS)


async def jetstream_events(
    js: JetStreamContext,
    subject: str,
    *,
    after_seq: int,
    keepalive_s: float,
    types: set[str] | None = None,
    stream: str = EVENTS_STREAM,
    open_wait_s: float = OPEN_WAIT_S,
) -> AsyncIterator[ServerSentEventMessage]:
    """The system's streams (every domain event, the board's moves, a goal's): replay from after_seq, then
    follow, through a consumer of the stream's own (a replay may be the stream's whole retention). While
    JetStream cannot make the consumer (no leader yet), the stream stays open with comments and tries
    again for up to open_wait_s. A run's stream follows the process's run feed instead (`run_stream`)."""
    queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=1024)

    async def on_msg(msg: Msg) -> None:
        await queue.put(msg)

    yield ServerSentEventMessage(comment="connected")
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + open_wait_s
    pause = 0.2
    while True:
        # A fresh config (and so a fresh deliver inbox) per attempt: an attempt whose answer was lost
        # may have made its consumer, which then pushes to an inbox nobody reads until it expires.
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after_seq else DeliverPolicy.ALL,
            opt_start_seq=after_seq + 1 if after_seq else None,
            inactive_threshold=60.0,
            filter_subjects=type_subjects(subject, types),
        )
        try:
            sub = await js.subscribe(
                subject, stream=stream, ordered_consumer=True, config=config, cb=on_msg, pending_msgs_limit=1024
            )
            break
        except UNAVAILABLE as exc:
            if loop.time() >= give_up_at:
                log.warning("the event stream %s stayed unavailable for %.0f s: %r", stream, open_wait_s, exc)
                yield stream_error("the event stream is unavailable; reconnect to resume")
                return
            yield ServerSentEventMessage(comment=WAITING)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
    said_at = loop.time()
    try:
        while True:
            try:
                msg = await asyncio.wait_for(queue.get(), keepalive_s)
            except TimeoutError:
                said_at = loop.time()
                yield ServerSentEventMessage(comment="keep-alive")
                continue
            m = feed_msg(msg.metadata.sequence.stream, msg.subject, msg.data)
            if m.type is not None and (
                not types or any(m.type == t or m.type.startswith(t.rstrip("*")) for t in types)
            ):
                said_at = loop.time()
                yield ServerSentEventMessage(data=m.data.decode(), event=m.type, id=str(m.seq))
            elif loop.time() - said_at >= keepalive_s:
                # A long replay of what the client does not follow (or of poison, skipped) still says something
                # every keep-alive: a client gone is seen at that write (its stream slot given back), and one
                # still there, or a proxy between, is not left in silence for the whole replay.
                said_at = loop.time()
                yield ServerSentEventMessage(comment="keep-alive")
    finally:
        # Unsubscribing an ordered consumer can stall on a busy connection; never let it hold the response open.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sub.unsubscribe(), 2)


# A run's event stream: what came before it joined the process's run feed, then what the feed hands it.
# The feed is joined first, and it tells from which sequence it hands the stream every message of the run
# (`Listener.after`) and which older ones it still holds (`Listener.kept`); only what is older still is read
# from JetStream, by message gets. Nothing falls between the parts, and a sequence already sent is never
# sent again, so the ids (stream sequences) stay exact for a client resuming with Last-Event-ID.

# A replay older than the feed's memory reads up to this many messages one get at a time (each costs
# nats-server ~0.3 ms); a longer one reads the rest through a consumer of its own.
REPLAY_GETS = 2
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

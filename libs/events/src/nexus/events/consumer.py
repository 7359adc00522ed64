"""Durable pull consumers with idempotent handlers, bounded redelivery and a dead-letter subject."""

import asyncio
import re
import contextlib
import time
import hashlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry.trace import Status, StatusCode
from nats.js.errors import NotFoundError
from prometheus_client import Counter

from nexus.events.bus import forget_reconnect, on_reconnect
from nexus.events.catalog import BY_TYPE, MESSAGES, RUNS_STREAM, dlq_subject
from nexus.events.envelope import RawEnvelope, decode_raw, encode, make_envelope
from nexus.events.payloads import DeadLetter
from nexus.events.payloads import MAX_MESSAGE_BYTES
from nexus.domain.limits import unstorable
from nexus.events.pull import FETCH_MAX_BYTES, ack_all, fetch_bounded, quick_next
from nexus.events.tracing import processing, processing_group, publishing

log = logging.getLogger("nexus.events.consumer")

CONSUMED = Counter("nexus_consumer_messages_total", "Messages handled by consumers", ["consumer", "outcome"])
DEAD_LETTERS = Counter("nexus_dlq_messages_total", "Messages sent to the dead-letter subject", ["subject"])


# A dead letter keeps at most this much of the original body: escaped as JSON it stays far below
# NATS's max_payload (1 MiB by default) whatever the body holds.
DLQ_BODY_CHARS = 16_384


class Poison(Exception):
    """A handler raises this for a message that can never succeed: it goes straight to the DLQ."""


@dataclass(slots=True)
class Delivery:
    envelope: RawEnvelope
    payload: Any
    subject: str
    deliveries: int
    stream_seq: int
    msg: Msg | None = None  # for in_progress() on long handling


Handler = Callable[[Delivery], Awaitable[None]]


class DeadLetterSink(Protocol):
    """Where dead letters are published: a JetStream context, or FastStream's broker behind one."""

    async def publish(self, subject: str, payload: bytes, *, headers: dict[str, str] | None = None) -> Any: ...


GroupHandler = Callable[[list[Delivery]], Awaitable[None]]


def expected_type(subject: str) -> str | None:
    """The message type a subject carries: nexus.cmd.core.create_goal → core.create_goal,
    nexus.run.<id>.status → run.status, nexus.evt.task.created → task.created."""
    parts = subject.split(".")
    if len(parts) < 3 or parts[0] != "nexus":
        return None
    if parts[1] == "run" and len(parts) >= 4:
        return "run." + ".".join(parts[3:])
    if parts[1] in ("cmd", "evt"):
        name = ".".join(parts[2:])
        if name in BY_TYPE:
            return name
        # A subject with parameters of its own (nexus.cmd.core.plan_children.<run_id>).
        return next((type_ for pattern, type_ in _PARAMETERIZED if pattern.fullmatch(subject)), name)
    return None


_PARAMETERIZED = [
    (re.compile(re.escape(m.subject).replace(r"\{run_id\}", r"[^.]+")), m.type)
    for m in MESSAGES
    if "{run_id}" in m.subject and not m.subject.startswith("nexus.run.")
]


# What `decode_message` raises for a message no consumer can ever read (not JSON, not an envelope, a type
# its subject does not carry, a payload of another shape, too large): every caller catches exactly these.
UNDECODABLE = (msgspec.DecodeError, ValueError)


def decode_message(msg: Msg) -> tuple[RawEnvelope, Any]:
    """The envelope and its payload, decoded as the SUBJECT says: a command's subject decides its
    handler, so an envelope whose `type` disagrees is refused (and dead-lettered with that reason).
    Raises one of UNDECODABLE."""
    if len(msg.data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(msg.data)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
    env = decode_raw(msg.data)
    want = expected_type(msg.subject)
    if want is not None and env.type != want:
        raise ValueError(f"envelope type {env.type!r} disagrees with subject {msg.subject} (carries {want!r})")
    m = BY_TYPE.get(want or env.type)
    if m is None:
        raise ValueError(f"unknown message type {env.type!r}")
    payload: Any = msgspec.json.decode(env.data, type=m.payload)
    # What no store can keep is refused here, as over HTTP, rather than failing at every redelivery's write.
    # A run's own events may carry a NUL (what a command printed): ingestion keeps them as bytes.
    if (found := unstorable(env.data, nul=m.stream != RUNS_STREAM)) is not None:
        field, why = found
        raise ValueError(f"{why} (at `$.{field}`)")
    return env, payload


def subject_label(subject: str) -> str:
    """A metric label without ids: nexus.run.<run_id>.log → nexus.run.*.log."""
    parts = subject.split(".")
    if len(parts) > 3 and parts[1] == "run":
        parts[2] = "*"
    return ".".join(parts)


def letter_for(msg: Msg, consumer: str, reason: str, deliveries: int) -> DeadLetter:
    """A dead letter that always fits under the server's max_payload: a large body is cut, keeping
    its size and sha256 so it can be matched against the original."""
    data = msg.data or b""
    body = data.decode("utf-8", errors="replace")
    truncated = len(body) > DLQ_BODY_CHARS
    return DeadLetter(
        original_subject=msg.subject,
        reason=reason[:2000],
        consumer=consumer,
        deliveries=deliveries,
        body=body[:DLQ_BODY_CHARS],
        body_bytes=len(data),
        body_sha256=hashlib.sha256(data).hexdigest(),
        truncated=truncated,
    )


async def dead_letter(js: DeadLetterSink, msg: Msg, consumer: str, reason: str, deliveries: int) -> bool:
    """Publish the message to nexus.dlq.<subject> with the reason. Never raises: False when the
    dead letter could not be published (the caller leaves the message for redelivery)."""
    try:
        env = make_envelope("dlq", letter_for(msg, consumer, reason, deliveries), source=consumer)
        headers = {"Nats-Msg-Id": env.id}
        with publishing(dlq_subject(msg.subject), headers, msg_id=env.id):
            await js.publish(dlq_subject(msg.subject), encode(env), headers=headers)
    except Exception:  # dead-lettering must never take the consumer down
        log.exception("could not dead-letter %s from %s (%s)", msg.subject, consumer, reason[:200])
        return False
    DEAD_LETTERS.labels(subject_label(msg.subject)).inc()
    log.warning("dead-lettered %s from %s: %s", msg.subject, consumer, reason[:500])
    return True


async def reject(js: DeadLetterSink, msg: Msg, consumer: str, reason: str, deliveries: int) -> None:
    """Dead-letter and terminate a message that can never succeed; if the dead letter could not be
    published, the message comes back later instead of being lost."""
    if await dead_letter(js, msg, consumer, reason, deliveries):
        await _quietly(msg.term())
        CONSUMED.labels(consumer, "dead_letter").inc()
    else:
        await _quietly(msg.nak(delay=5.0))
        CONSUMED.labels(consumer, "retried").inc()


async def _quietly(op: Awaitable[Any]) -> None:
    """ack/nak/term over a connection that may be reconnecting: the server redelivers if it was lost."""
    try:
        await op
    except Exception:
        log.warning("acknowledging a message failed; it will be redelivered", exc_info=True)


def retry_delay(deliveries: int) -> float:
    """How long a message that failed on its `deliveries`-th delivery waits before it comes back."""
    return min(0.2 * 2.0**deliveries, 10.0)


async def settle(
    js: DeadLetterSink, msg: Msg, durable: str, deliveries: int, max_deliver: int, exc: Exception | None
) -> None:
    """Ack a handled message; after a failure nak it with backoff, or dead-letter it on its last delivery."""
    if exc is None:
        await _quietly(msg.ack())
        CONSUMED.labels(durable, "ok").inc()
    elif deliveries >= max_deliver:
        await reject(js, msg, durable, f"failed {deliveries} times: {exc!r}", deliveries)
    else:
        log.warning("handling %s failed (delivery %d), will retry: %r", msg.subject, deliveries, exc, exc_info=exc)
        await _quietly(msg.nak(delay=retry_delay(deliveries)))
        CONSUMED.labels(durable, "retried").inc()


def _metadata(msg: Msg) -> Any:
    """JetStream's delivery metadata, or None for a message that did not come from a stream
    (FastStream's test broker hands handlers plain messages)."""
    try:
        return msg.metadata
    except Exception:  # noqa: BLE001 — nats raises NotJSMessageError, or ValueError on an odd reply subject
        return None


class HandlerTimedOut(Exception):
    """A handler ran past its deadline (a downstream that never answers): its message is retried later."""


@contextlib.asynccontextmanager
async def _within(deadline_s: float | None, subject: str) -> AsyncIterator[None]:
    """The handler's work, cut at `deadline_s`: a call into a downstream that hangs (a database, a provider, an
    API that takes the request and never answers) must not stop the consumer for good. The deadline is the
    ack wait: past it JetStream hands the message out again anyway. None: the handler bounds itself (it holds
    its message on purpose, telling JetStream it is still working)."""
    if deadline_s is None:
        yield
        return
    try:
        async with asyncio.timeout(deadline_s):
            yield
    except TimeoutError as exc:
        raise HandlerTimedOut(f"handling {subject} took longer than {deadline_s:g}s") from exc


async def _handle_one(
    js: DeadLetterSink, msg: Msg, durable: str, handler: Handler, max_deliver: int, deadline_s: float | None = None
) -> None:
    try:
        await _handle(js, msg, durable, handler, max_deliver, deadline_s)
    except asyncio.CancelledError:
        raise
    except Exception:  # nothing one message does may end the loop; it is redelivered
        log.exception("handling %s on %s failed outside the handler", msg.subject, durable)


async def _handle(
    js: DeadLetterSink, msg: Msg, durable: str, handler: Handler, max_deliver: int, deadline_s: float | None
) -> None:
    meta = _metadata(msg)
    deliveries = meta.num_delivered if meta else 1
    try:
        env, payload = decode_message(msg)
    except UNDECODABLE as exc:
        await reject(js, msg, durable, f"undecodable: {exc}", deliveries)
        return
    with processing(
        msg.subject,
        msg.headers,
        consumer=durable,
        msg_id=(msg.headers or {}).get("Nats-Msg-Id"),
        correlation_id=env.correlation_id,
        size=len(msg.data),
        deliveries=deliveries,
    ) as span:
        try:
            async with _within(deadline_s, msg.subject):
                await handler(Delivery(env, payload, msg.subject, deliveries, meta.sequence.stream if meta else 0, msg))
        except Poison as exc:
            span.set_attribute("nexus.outcome", "dead_letter")
            await reject(js, msg, durable, f"rejected: {exc}", deliveries)
        except Exception as exc:  # noqa: BLE001 — any handler failure is retried, then dead-lettered
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.set_attribute("error.type", type(exc).__name__)
            await settle(js, msg, durable, deliveries, max_deliver, exc)
        else:
            await settle(js, msg, durable, deliveries, max_deliver, None)


def _delivered(msg: Msg) -> tuple[int, int]:
    """(times delivered, stream sequence) from a JetStream message's reply subject, read without
    building nats' Metadata (a frozen dataclass and a datetime per message, a hot cost at thousands a second):
    $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.… or, with a domain and account,
    $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<stream seq>.…"""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
        return int(tokens[4]), int(tokens[5])
    if len(tokens) >= 11 and tokens[0] == "$JS" and tokens[1] == "ACK":
        return int(tokens[6]), int(tokens[7])
    meta = msg.metadata  # anything else: nats' own parser (raises for a message not from a stream)
    return meta.num_delivered, meta.sequence.stream


async def _handle_group(
    js: JetStreamContext,
    group: list[Msg],
    durable: str,
    group_handler: GroupHandler,
    deadline_s: float | None = None,
    max_deliver: int = 0,
) -> bool:
    """Handle one key's messages in one call and ack them all; False (nothing acked) if any message
    does not decode or the call fails, so the caller handles them one by one. A call past its deadline
    sends them all back for later (one by one, each would wait out the same hung downstream), unless one
    is on its last delivery: that one must be settled (dead-lettered) one by one."""
    deliveries: list[Delivery] = []
    try:
        for msg in group:
            env, payload = decode_message(msg)
            deliveries.append(Delivery(env, payload, msg.subject, *_delivered(msg), msg))
        with processing_group([m.subject for m in group], [m.headers for m in group], consumer=durable):
            async with _within(deadline_s, group[0].subject):
                await group_handler(deliveries)
    except asyncio.CancelledError:
        raise
    except HandlerTimedOut as exc:
        if max(d.deliveries for d in deliveries) >= max_deliver:
            return False
        log.warning("%r: %d messages of %s come back later", exc, len(group), durable)
        for m, d in zip(group, deliveries, strict=True):
            await _quietly(m.nak(delay=retry_delay(d.deliveries)))
        CONSUMED.labels(durable, "retried").inc(len(group))
        return True
    except Exception:  # one by one instead, where each failure is settled on its own
        log.debug("group of %d on %s handled one by one", len(group), durable, exc_info=True)
        return False
    await _quietly(ack_all(group))  # each on its own subject, in one write
    CONSUMED.labels(durable, "ok").inc(len(group))
    return True


class LoopHealth:
    """Which long-running loops of this process are alive; /readyz says not ready while one is down."""

    def __init__(self) -> None:
        self.down: dict[str, str] = {}
        self.restarts: dict[str, int] = {}

    def healthy(self) -> bool:
        return not self.down


LOOPS = LoopHealth()
LOOP_RESTARTS = Counter("nexus_loop_restarts_total", "Consumer loops restarted after they died", ["loop"])


async def supervised(
    name: str, run: Callable[[], Awaitable[None]], stop: asyncio.Event, *, max_backoff_s: float = 10.0
) -> None:
    """Run a loop until `stop`; if it dies (or returns early) restart it with backoff, and report it
    down in LOOPS meanwhile. Cancellation (shutdown) is never swallowed."""
    backoff = 0.2
    while not stop.is_set():
        try:
            await run()
            if stop.is_set():
                break
            reason = "returned before stop"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loop is restarted; the process lives on
            log.exception("loop %s died; restarting in %.1fs", name, backoff)
            reason = repr(exc)[:500]
        LOOPS.down[name] = reason
        LOOPS.restarts[name] = LOOPS.restarts.get(name, 0) + 1
        LOOP_RESTARTS.labels(name).inc()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), backoff)
        backoff = min(backoff * 2, max_backoff_s)
        LOOPS.down.pop(name, None)
    LOOPS.down.pop(name, None)


# At most this many messages of a dead instance's window are handled again at start; past that, the
# rest come back by redelivery after the ack wait, as they always would.
RECLAIM_LIMIT = 20_000
# ...and at most about this many bytes of them (the messages read are held until all are handled).
RECLAIM_MAX_BYTES = 64 * 1024 * 1024


async def _read_range(js: JetStreamContext, stream: str, subject: str, first: int, last: int, limit: int) -> list[Msg]:
    """The stream's messages on `subject` with sequence first..last (at most `limit`, and about
    RECLAIM_MAX_BYTES), read by an ordered consumer of our own: nothing is delivered to, or acknowledged
    on, the durable."""
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=first, inactive_threshold=30.0
    )
    # What the server pushes ahead of our reading is bounded too: past it, the subscription drops (a gap the
    # ordered consumer mends by asking again from where it is).
    sub = await js.subscribe(
        subject, stream=stream, ordered_consumer=True, config=config, pending_bytes_limit=RECLAIM_MAX_BYTES
    )
    out: list[Msg] = []
    size = 0
    try:
        while len(out) < limit and size < RECLAIM_MAX_BYTES:
            try:
                msg = await sub.next_msg(timeout=2.0)
            except (NatsTimeout, TimeoutError):
                break  # nothing more in the stream (the range was purged, or ends in other subjects)
            meta = msg.metadata
            if meta.sequence.stream > last:
                break
            out.append(msg)
            size += len(msg.data) + len(msg.subject)
            if meta.sequence.stream == last or meta.num_pending == 0:
                break
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sub.unsubscribe(), 2)
    return out


async def reclaim_unacked(
    js: JetStreamContext,
    *,
    stream: str,
    durable: str,
    subject: str,
    group_handler: GroupHandler,
    partition: Callable[[str], str],
    concurrency: int = 1,
    limit: int = RECLAIM_LIMIT,
    deadline_s: float | None = None,
) -> int:
    """Handle again, straight from the stream, what `durable` delivered and nobody acknowledged yet.

    A consumer instance that dies (SIGKILL) leaves the messages it had fetched pending on the server:
    JetStream hands them out again only after the ack wait, long after newer messages of the same key
    were handled. A new instance calls this before its first fetch, so they are handled now and in
    stream order per key. Only for idempotent handlers (the held copies are handled again, as
    duplicates, when they come back). Nothing is acked, nak'ed or dead-lettered here: a message that
    fails is left to its redelivery. Returns how many messages were handled."""
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        return 0  # a new durable: nothing was ever delivered
    if not info.num_ack_pending or info.delivered is None or info.ack_floor is None:
        return 0
    first, last = (info.ack_floor.stream_seq or 0) + 1, info.delivered.stream_seq or 0
    if last < first:
        return 0
    msgs = await _read_range(js, stream, subject, first, last, limit)
    groups: dict[str, list[Delivery]] = {}
    for msg in msgs:
        try:
            env, payload = decode_message(msg)
        except UNDECODABLE:
            continue  # the durable's own delivery dead-letters it
        # Counted as a second delivery: the dead instance had it, and may have stored part of it.
        groups.setdefault(partition(msg.subject), []).append(
            Delivery(env, payload, msg.subject, 2, msg.metadata.sequence.stream)
        )
    sem = asyncio.Semaphore(concurrency)
    handled = 0

    async def run_group(group: list[Delivery]) -> None:
        nonlocal handled
        async with sem:
            try:
                async with _within(deadline_s, group[0].subject):  # a hung downstream must not keep us from starting
                    await group_handler(group)
                handled += len(group)
            except asyncio.CancelledError:
                raise
            except Exception:  # left to the durable's redelivery (retries, dead letter)
                log.warning(
                    "reclaiming %d messages of %s failed; they wait for redelivery", len(group), durable, exc_info=True
                )

    await asyncio.gather(*(run_group(g) for g in groups.values()))
    log.info(
        "%s: handled %d of %d messages a previous instance left unacknowledged (stream %d..%d)",
        durable,
        handled,
        len(msgs),
        first,
        last,
    )
    return handled


class ConsumerGone(Exception):
    """The durable consumer a loop fetches through no longer exists (someone deleted it): fetching again would
    fail forever, so the loop ends and its supervisor starts it again, which creates the durable anew."""


async def _deleted(sub: JetStreamContext.PullSubscription) -> bool:
    """Whether the subscription's durable consumer is gone (not: unreachable while NATS reconnects)."""
    try:
        await sub.consumer_info()
    except NotFoundError:
        return True
    except Exception:  # noqa: BLE001 — NATS unreachable: not known to be gone
        return False
    return False


async def consume(js: JetStreamContext, *, durable: str, stop: asyncio.Event, **options: Any) -> None:
    """`consume_once` under supervision: a loop that dies is restarted with backoff."""
    await supervised(durable, lambda: consume_once(js, durable=durable, stop=stop, **options), stop)


async def consume_once(
    js: JetStreamContext,
    *,
    stream: str,
    durable: str,
    subject: str,
    handler: Handler,
    stop: asyncio.Event,
    max_deliver: int = 5,
    ack_wait_s: float = 30.0,
    batch: int = 32,
    concurrency: int = 1,
    partition: Callable[[str], str] | None = None,
    max_ack_pending: int = 1000,
    group_handler: GroupHandler | None = None,
    prefetch: bool = False,
    reclaim: bool = False,
    memory: bool = False,
    max_bytes: int = FETCH_MAX_BYTES,
) -> None:
    """Pull and handle until `stop` is set. With concurrency > 1 a batch is handled in parallel;
    with `partition` (subject → key) messages of one key keep their order and different keys
    run in parallel — e.g. one run's events in sequence, many runs at once. With `group_handler`
    too, one key's messages of a fetch are handled in one call (batched writes); if that call
    fails, they are handled one by one with `handler` (retries and dead letters as usual).
    With `prefetch`, the next batch is fetched while this one is handled (it is handled only after
    this one is done, so order and ack-after-handling hold); what was fetched but not handled when
    the loop stops is nak'ed, so it comes back at once instead of after `ack_wait_s`.
    With `reclaim` (and `partition`, `group_handler`), what a dead instance fetched and never acknowledged
    is handled first, straight from the stream (`reclaim_unacked`), instead of after the ack wait.
    With `memory` (work-queue streams only, see `pull_config`) the durable's state is kept in memory, and a
    durable lost with a server restart is made anew in place. A fetch holds at most `batch` messages and about
    `max_bytes` bytes (with `prefetch`, two fetches are in memory at once)."""
    config = pull_config(
        durable=durable,
        subject=subject,
        max_deliver=max_deliver,
        ack_wait_s=ack_wait_s,
        max_ack_pending=max_ack_pending,
        memory=memory,
    )
    async with pulling(js, stream=stream, subject=subject, config=config) as sub:
        if reclaim and partition is not None and group_handler is not None:
            # A pull consumer delivers only on fetch: what is pending now was fetched by another instance — a
            # dead one (the point), or a live replica (handling it twice changes nothing for an idempotent handler).
            try:
                await reclaim_unacked(
                    js,
                    stream=stream,
                    durable=durable,
                    subject=subject,
                    group_handler=group_handler,
                    partition=partition,
                    concurrency=concurrency,
                    deadline_s=ack_wait_s,
                )
            except Exception:  # never keeps the consumer from starting; redelivery still comes
                log.warning("could not reclaim %s's unacknowledged messages", durable, exc_info=True)
        sem = asyncio.Semaphore(concurrency)

        async def run(m: Msg) -> None:
            async with sem:
                await handle_message(js, m, durable, handler, max_deliver, ack_wait_s)

        async def run_group(group: list[Msg]) -> None:
            async with sem:
                if group_handler is not None and await _handle_group(
                    js, group, durable, group_handler, ack_wait_s, max_deliver
                ):
                    return
                for m in group:
                    await handle_message(js, m, durable, handler, max_deliver, ack_wait_s)

        batches_of = fetched(
            sub,
            durable,
            stop,
            lambda: batch,
            prefetch=prefetch,
            end_if_deleted=True,
            remake=remaking(js, stream, config) if memory else None,
            max_bytes=max_bytes,
        )
        async with contextlib.aclosing(batches_of) as batches:
            async for msgs in batches:
                if partition is not None and concurrency > 1:
                    groups: dict[str, list[Msg]] = {}
                    for m in msgs:
                        groups.setdefault(partition(m.subject), []).append(m)
                    await asyncio.gather(*(run_group(g) for g in groups.values()))
                elif concurrency == 1:
                    for m in msgs:
                        await handle_message(js, m, durable, handler, max_deliver, ack_wait_s)
                else:
                    await asyncio.gather(*(run(m) for m in msgs))


async def _return_unhandled(ahead: "asyncio.Future[list[Msg]]", sub: Any) -> None:
    """A batch fetched ahead (or a fetch cut short by `stop`) that will not be handled goes back to the
    server for redelivery now, not after ack_wait: what it already got, and what the server had sent it
    that still waits in the subscription's queue."""
    if not ahead.done():
        ahead.cancel()
    try:
        msgs = await ahead
    except asyncio.CancelledError:
        if not ahead.cancelled():  # we are being cancelled ourselves
            raise
        msgs = []
    except Exception:  # noqa: BLE001 — a timeout or a failed fetch: nothing was handed to us
        msgs = []
    for m in [*msgs, *_waiting(sub)]:
        await _quietly(m.nak())
    # The fetch's pull request outlives its cancel: what the server sent for it before it read our PING
    # is in the queue once the PONG is back (else it would sit unacknowledged until ack_wait).
    nc = getattr(sub, "_nc", None)
    if nc is not None:
        with contextlib.suppress(Exception):
            await nc.flush(timeout=1)
        for m in _waiting(sub):
            await _quietly(m.nak())


def _waiting(sub: Any) -> list[Msg]:
    """The stream messages waiting in a pull subscription's queue, taken out of it (status messages dropped)."""
    inner: Any = getattr(sub, "_sub", None)
    queue = getattr(inner, "_pending_queue", None)
    out: list[Msg] = []
    while queue is not None and not queue.empty():
        msg = queue.get_nowait()
        queue.task_done()
        if hasattr(inner, "_pending_size"):
            inner._pending_size -= len(msg.data)
        if (msg.reply or "").startswith("$JS.ACK."):
            out.append(msg)
    return out


# The one way a delivered message is decoded, handled and settled, for subscribers built elsewhere
# (FastStream's, see nexus.events.faststream).
handle_message = _handle_one


# How long one pull request lingers on the server. It ends as soon as messages arrive (the server answers a
# lingering no-wait request once it has delivered what is there), so this is not a delay: it only sets how
# often an idle consumer asks again — each ask is a request and an answer through nats-server.
FETCH_WAIT_S = 5.0


def pull_config(
    *, durable: str, subject: str, max_deliver: int, ack_wait_s: float, max_ack_pending: int, memory: bool = False
) -> ConsumerConfig:
    """The durable pull consumer every loop reads through: explicit acks, the whole stream, one subject.
    `memory`: its state (delivered, acknowledged) lives in nats-server's memory instead of a file rewritten
    on every change. Only for a work-queue stream, where an acknowledged message is removed from the stream:
    a consumer lost with a server restart is made anew from the stream's start and gets exactly the
    messages nobody acknowledged (`tests/events/test_memory_consumer.py` restarts a real nats-server)."""
    return ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        max_deliver=max_deliver,
        ack_wait=ack_wait_s,
        max_ack_pending=max_ack_pending,
        filter_subject=subject,
        mem_storage=memory or None,
    )


@contextlib.asynccontextmanager
async def pulling(
    js: JetStreamContext, *, stream: str, subject: str, config: ConsumerConfig
) -> AsyncIterator[JetStreamContext.PullSubscription]:
    """A pull subscription through the durable `config` names (made with it when missing), unsubscribed
    when the loop ends."""
    sub = await js.pull_subscribe(subject, durable=config.durable_name, stream=stream, config=config)
    quick_next(sub)  # a fetched batch is handed over without a task per message
    try:
        yield sub
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def remaking(js: JetStreamContext, stream: str, config: ConsumerConfig) -> Callable[[], Awaitable[object]]:
    """What makes a lost durable anew in place (the subscription keeps fetching by its name)."""
    return lambda: js.add_consumer(stream, config)


def _recovered(durable: str, failures: int, since: float) -> None:
    took = time.monotonic() - since
    log.info("fetching on %s again after %d failed fetches (%.1f s)", durable, failures, took)


async def fetched(
    sub: JetStreamContext.PullSubscription,
    durable: str,
    stop: asyncio.Event,
    size: Callable[[], int],
    *,
    prefetch: bool = False,
    end_if_deleted: bool = False,
    remake: Callable[[], Awaitable[object]] | None = None,
    wait_s: float = FETCH_WAIT_S,
    max_bytes: int = FETCH_MAX_BYTES,
) -> AsyncGenerator[list[Msg], None]:
    """Each batch (of at most `size()` messages and about `max_bytes` bytes: `fetch_bounded`) fetched until
    `stop`; a fetch that finds nothing, or fails while a reconnect is in progress, is simply tried again:
    the loop outlives both. A fetch
    lingers up to `wait_s` on the server and returns as soon as something arrives; `stop` cuts it short
    (what it had received goes back to the server at once). With `prefetch`, the next batch is fetched
    while the caller handles this one; a batch fetched ahead and never handed out (the loop ended) is
    nak'ed, so it comes back at once, not after the ack wait. Close it (`contextlib.aclosing`) when the
    loop may end early. When the durable consumer no longer exists (deleted, or a memory consumer lost
    with a server restart): `remake` makes it anew in place; else with `end_if_deleted` the loop raises
    `ConsumerGone` instead of retrying forever."""
    ahead: asyncio.Future[list[Msg]] | None = None
    stopping = asyncio.ensure_future(stop.wait())
    # A reconnect ends a lingering fetch: its pull request died with the connection (or the server), and
    # the fetch would wait out its expiry before asking again.
    nc, reconnected = getattr(sub, "_nc", None), asyncio.Event()
    on_reconnect(nc, reconnected)
    back = asyncio.ensure_future(reconnected.wait())
    failing_since: float | None = None  # a streak of failed fetches: told once with its cause, then when it ends
    failures = 0
    try:
        while not stop.is_set():
            pending, ahead = ahead or asyncio.ensure_future(fetch_bounded(sub, size(), max_bytes, wait_s)), None
            await asyncio.wait((pending, stopping, back), return_when=asyncio.FIRST_COMPLETED)
            if not pending.done() and back.done():  # what the server sends from now on waits in the queue
                reconnected.clear()
                back = asyncio.ensure_future(reconnected.wait())
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
                continue
            if not pending.done():  # stopped while the request lingered
                ahead = pending
                break
            try:
                msgs = pending.result()
            except (NatsTimeout, TimeoutError):
                msgs = None  # no message within the wait: an answer all the same
            except Exception as exc:  # a reconnect in progress; keep the loop alive
                if (remake is not None or end_if_deleted) and await _deleted(sub):
                    if remake is None:
                        raise ConsumerGone(f"the durable consumer {durable} was deleted") from exc
                    log.warning("the durable consumer %s is gone; making it anew", durable)
                    with contextlib.suppress(Exception):  # not made now: the next round tries again
                        await remake()
                        continue
                else:
                    failures += 1
                    if failing_since is None:
                        failing_since = time.monotonic()
                        log.warning("fetch failed on %s; retrying every 0.5 s", durable, exc_info=True)
                    else:
                        log.debug("fetch failed on %s again: %r", durable, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(stopping), 0.5)
                continue
            if failing_since is not None:
                _recovered(durable, failures, failing_since)
                failing_since, failures = None, 0
            if msgs is None:
                continue
            if prefetch:
                ahead = asyncio.ensure_future(fetch_bounded(sub, size(), max_bytes, wait_s))
            yield msgs
    finally:
        stopping.cancel()
        back.cancel()
        forget_reconnect(nc, reconnected)
        if ahead is not None:
            await _return_unhandled(ahead, sub)

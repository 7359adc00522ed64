"""Durable pull consumers with idempotent handlers, bounded redelivery and a dead-letter subject."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import context as otel_context
from opentelemetry import propagate
from prometheus_client import Counter

from nexus.events.catalog import BY_TYPE, dlq_subject
from nexus.events.envelope import RawEnvelope, decode_raw, encode, make_envelope
from nexus.events.payloads import DeadLetter

log = logging.getLogger("nexus.events.consumer")

CONSUMED = Counter("nexus_consumer_messages_total", "Messages handled by consumers", ["consumer", "outcome"])
DEAD_LETTERS = Counter("nexus_dlq_messages_total", "Messages sent to the dead-letter subject", ["subject"])


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


def decode_message(msg: Msg) -> tuple[RawEnvelope, Any]:
    env = decode_raw(msg.data)
    m = BY_TYPE.get(env.type)
    if m is None:
        raise ValueError(f"unknown message type {env.type!r}")
    return env, msgspec.json.decode(env.data, type=m.payload)


def subject_label(subject: str) -> str:
    """A metric label without ids: nexus.run.<run_id>.log → nexus.run.*.log."""
    parts = subject.split(".")
    if len(parts) > 3 and parts[1] == "run":
        parts[2] = "*"
    return ".".join(parts)


async def dead_letter(js: JetStreamContext, msg: Msg, consumer: str, reason: str, deliveries: int) -> None:
    body = msg.data.decode("utf-8", errors="replace")
    letter = DeadLetter(original_subject=msg.subject, reason=reason[:2000], consumer=consumer, body=body, deliveries=deliveries)
    env = make_envelope("dlq", letter, source=consumer)
    await js.publish(dlq_subject(msg.subject), encode(env), headers={"Nats-Msg-Id": env.id})
    DEAD_LETTERS.labels(subject_label(msg.subject)).inc()
    log.warning("dead-lettered %s from %s: %s", msg.subject, consumer, reason)


async def settle(js: JetStreamContext, msg: Msg, durable: str, deliveries: int, max_deliver: int, exc: Exception | None) -> None:
    """Ack a handled message; after a failure nak it with backoff, or dead-letter it on its last delivery."""
    if exc is None:
        await msg.ack()
        CONSUMED.labels(durable, "ok").inc()
    elif deliveries >= max_deliver:
        await dead_letter(js, msg, durable, f"failed {deliveries} times: {exc!r}", deliveries)
        await msg.term()
        CONSUMED.labels(durable, "dead_letter").inc()
    else:
        log.warning("handling %s failed (delivery %d), will retry: %r", msg.subject, deliveries, exc, exc_info=exc)
        await msg.nak(delay=min(0.2 * 2**deliveries, 10.0))
        CONSUMED.labels(durable, "retried").inc()


def _metadata(msg: Msg) -> Any:
    """JetStream's delivery metadata, or None for a message that did not come from a stream
    (FastStream's test broker hands handlers plain messages)."""
    try:
        return msg.metadata
    except Exception:  # noqa: BLE001 — nats raises NotJSMessageError, or ValueError on an odd reply subject
        return None


async def handle_message(js: Any, msg: Msg, durable: str, handler: Handler, max_deliver: int) -> None:
    """Decode one envelope (msgspec, by the catalog), run the handler and settle the message:
    ack; nak with backoff; dead-letter and term when undecodable, Poison or out of deliveries.
    `js` only needs `publish(subject, body, headers=...)` for the dead letter."""
    meta = _metadata(msg)
    deliveries = meta.num_delivered if meta else 1
    try:
        env, payload = decode_message(msg)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        await dead_letter(js, msg, durable, f"undecodable: {exc}", deliveries)
        await msg.term()
        CONSUMED.labels(durable, "dead_letter").inc()
        return
    token = otel_context.attach(propagate.extract(msg.headers or {}))
    try:
        await handler(Delivery(env, payload, msg.subject, deliveries, meta.sequence.stream if meta else 0, msg))
    except Poison as exc:
        await dead_letter(js, msg, durable, f"rejected: {exc}", deliveries)
        await msg.term()
        CONSUMED.labels(durable, "dead_letter").inc()
    except Exception as exc:  # noqa: BLE001 — any handler failure is retried, then dead-lettered
        await settle(js, msg, durable, deliveries, max_deliver, exc)
    else:
        await settle(js, msg, durable, deliveries, max_deliver, None)
    finally:
        otel_context.detach(token)


async def consume(
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
) -> None:
    """Pull and handle until `stop` is set. With concurrency > 1 a batch is handled in parallel;
    with `partition` (subject → key) messages of one key keep their order and different keys
    run in parallel — e.g. one run's events in sequence, many runs at once."""
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        max_deliver=max_deliver,
        ack_wait=ack_wait_s,
        max_ack_pending=max_ack_pending,
        filter_subject=subject,
    )
    sub = await js.pull_subscribe(subject, durable=durable, stream=stream, config=config)
    sem = asyncio.Semaphore(concurrency)

    async def run(m: Msg) -> None:
        async with sem:
            await handle_message(js, m, durable, handler, max_deliver)

    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(batch, timeout=0.5)
            except (NatsTimeout, TimeoutError):
                continue
            except Exception:  # noqa: BLE001 — a reconnect in progress; keep the loop alive
                log.warning("fetch failed on %s; retrying", durable, exc_info=True)
                await asyncio.sleep(0.5)
                continue
            if partition is not None and concurrency > 1:
                groups: dict[str, list[Msg]] = {}
                for m in msgs:
                    groups.setdefault(partition(m.subject), []).append(m)

                async def run_group(group: list[Msg]) -> None:
                    async with sem:
                        for m in group:
                            await handle_message(js, m, durable, handler, max_deliver)

                await asyncio.gather(*(run_group(g) for g in groups.values()))
            elif concurrency == 1:
                for m in msgs:
                    await handle_message(js, m, durable, handler, max_deliver)
            else:
                await asyncio.gather(*(run(m) for m in msgs))
    finally:
        try:
            await sub.unsubscribe()
        except Exception:  # noqa: BLE001
            pass

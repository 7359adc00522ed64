"""FastStream subscribers that keep our envelopes and our dead-letter rule.

A service at the edge (board-sync, telegram-gateway) declares its handlers with FastStream — one
decorated function per subject, its test broker for handler tests — while the message stays ours:
the envelope is decoded with msgspec by the catalog, and the handler's outcome is settled
explicitly (ack; nak with backoff; dead-letter to `nexus.dlq.<subject>` and term) by the same
`handle_message` the raw nats-py consumers use."""

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from nexus.events.bus import connect, ensure_streams
from nexus.events.consumer import FETCH_WAIT_S, LOOPS, Handler, handle_message
from nexus.events.lag import OWNED, watch_consumer_lag
from nexus.observability.periodic import every

log = logging.getLogger("nexus.events.faststream")


def broker_options(url: str, user: str, creds: str = "") -> dict[str, Any]:
    """How a service's FastStream broker connects: every node of the URL list, and with `creds` as
    the service's own NATS user, replies under its inbox prefix (the same as nexus.events.bus.connect)."""
    from nexus.events.permissions import inbox_prefix

    options: dict[str, Any] = {
        "servers": [u.strip() for u in url.split(",") if u.strip()],
        "max_reconnect_attempts": -1,
    }
    if creds:
        from faststream.nats.security import NatsCredentials
        from nats.aio.client import RawCredentials

        options["security"] = NatsCredentials(
            RawCredentials(creds) if creds.lstrip().startswith("-----BEGIN") else creds
        )
        options["inbox_prefix"] = inbox_prefix(user)
    return options


class BrokerPublisher:
    """What `dead_letter` needs of a JetStream context, over the broker (real or test)."""

    def __init__(self, broker: NatsBroker, stream: str) -> None:
        self.broker = broker
        self.stream = stream

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        await self.broker.publish(payload, subject, headers=headers, stream=self.stream)


# How long a message delivered and not acknowledged waits before it is delivered again. Short: a pull
# request of a process that just died can still be handed a message (the server has not seen the death
# yet), which then waits this long; a handler still at work says so every third of it (`_in_progress`).
ACK_WAIT_S = 5.0
# How long a handler that does not hold its message on purpose may work on it: past it, a downstream that
# never answers is given up on and the message comes back later (it is kept in progress until then).
HANDLER_DEADLINE_S = 30.0


async def _in_progress(msg: Any, every_s: float) -> None:
    """Until cancelled: tell the server every `every_s` that `msg` is still being handled."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await msg.in_progress()
        except Exception:  # the bus away: the message comes back after its ack wait, as any would
            log.debug("could not say %s is in progress", msg.subject, exc_info=True)


def durable_subscriber(
    broker: NatsBroker,
    subject: str,
    handler: Handler | None = None,
    *,
    stream: str,
    durable: str,
    max_deliver: int = 5,
    ack_wait_s: float = ACK_WAIT_S,
    batch: int = 1,
    deliver_new: bool = False,
    holds: bool = False,
) -> Any:
    """Register `handler(Delivery)` on a durable JetStream pull consumer named `durable` (or, without
    a handler, return a decorator that does). FastStream handles the messages of one fetched batch
    concurrently: the default batch of one keeps the subject's order (a handler that waits holds the
    ones behind it). `deliver_new`: a consumer created now starts at new messages instead of the
    stream's whole history (alerts about last week help nobody). A handler is cut at HANDLER_DEADLINE_S (a
    downstream that never answers must not stop the subscriber for good), unless it `holds` its message on
    purpose (telling JetStream it is still working while a provider is out): then it bounds each of its
    tries itself."""
    from nexus.events.catalog import DLQ_STREAM

    dlq = BrokerPublisher(broker, DLQ_STREAM)
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=JsAckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.NEW if deliver_new else DeliverPolicy.ALL,
        max_deliver=max_deliver,
        ack_wait=ack_wait_s,
        filter_subject=subject,
    )

    _DURABLES.setdefault(broker, []).append((stream, config))

    def register(h: Handler) -> Any:
        async def on_message(msg: NatsMessage) -> None:
            beat = asyncio.create_task(_in_progress(msg.raw_message, ack_wait_s / 3))
            try:
                await handle_message(
                    dlq, msg.raw_message, durable, h, max_deliver, None if holds else HANDLER_DEADLINE_S
                )
            finally:
                beat.cancel()

        on_message.__name__ = f"on_{durable.replace('-', '_')}"
        return broker.subscriber(
            subject,
            stream=JStream(name=stream, declare=False),
            durable=durable,
            config=config,
            pull_sub=PullSub(batch_size=batch, timeout=FETCH_WAIT_S),  # a lingering request: see FETCH_WAIT_S
            ack_policy=AckPolicy.MANUAL,
        )(on_message)

    return register(handler) if handler is not None else register


# The durable consumers each broker's subscribers read (stream, configuration), for `keep_durables`.
_DURABLES: "weakref.WeakKeyDictionary[NatsBroker, list[tuple[str, ConsumerConfig]]]" = weakref.WeakKeyDictionary()


def durables_of(broker: NatsBroker) -> list[tuple[str, ConsumerConfig]]:
    """The (stream, consumer configuration) of every durable subscriber registered on `broker`."""
    return list(_DURABLES.get(broker, ()))


async def ensure_durables(
    js: JetStreamContext, durables: list[tuple[str, ConsumerConfig]], *, level: int = logging.INFO
) -> None:
    """Create each of `durables` that does not exist. While one is missing (it could not be made: NATS
    unreachable, a workqueue stream refusing an overlapping filter) it is reported down in LOOPS, so the
    service's readiness says not ready; the error is raised after every durable was tried."""
    failed: Exception | None = None
    for stream, config in durables:
        name = config.durable_name or ""
        try:
            try:
                info = await js.consumer_info(stream, name)
            except NotFoundError:
                await js.add_consumer(stream, config)
                log.log(level, "made the durable consumer %s on %s (it did not exist)", name, stream)
            else:
                if info.config.ack_wait != config.ack_wait:  # made by an older version: updated in place
                    await js.add_consumer(stream, config)
                    log.info("the durable consumer %s on %s now waits %ss for acks", name, stream, config.ack_wait)
        except Exception as exc:  # noqa: BLE001 — raised after the others were tried; reported down meanwhile
            LOOPS.down[name] = f"durable consumer missing: {str(exc) or repr(exc)}"[:500]
            failed = failed or exc
        else:
            LOOPS.down.pop(name, None)
    if failed is not None:
        raise failed


async def keep_durables(js: JetStreamContext, broker: NatsBroker, stop: asyncio.Event, every_s: float = 5.0) -> None:
    """Until `stop`: a durable of the broker's subscribers that someone deleted is made anew. FastStream's
    pull loop keeps fetching by the durable's name through the outage, and reads it again once it exists
    (the raw loops do the same through `ConsumerGone` and their supervisor)."""
    durables = durables_of(broker)

    async def keep() -> None:
        await ensure_durables(js, durables, level=logging.WARNING)

    try:
        await every(every_s, stop, keep, what="keep durable consumers")
    finally:
        for _, config in durables:
            LOOPS.down.pop(config.durable_name or "", None)


def durables_down(broker: NatsBroker) -> list[str]:
    """The durables of `broker`'s subscribers that are missing now (and could not be made again)."""
    return [name for _, config in durables_of(broker) if (name := config.durable_name or "") in LOOPS.down]


@dataclass(frozen=True, slots=True)
class Edge:
    nc: NATS
    js: JetStreamContext
    broker: NatsBroker  # the service's subscribers register here; the service starts it when ready

    async def serve(self, stop: asyncio.Event) -> None:
        """Start the broker and serve until `stop`, making again any durable of its subscribers that
        someone deletes meanwhile (a missing one keeps `ready()` false until it is back)."""
        await self.broker.start()
        await keep_durables(self.js, self.broker, stop)

    def ready(self) -> bool:
        """Connected, and every durable the subscribers read exists."""
        return self.nc.is_connected and not durables_down(self.broker)


@contextlib.asynccontextmanager
async def edge(
    url: str, user: str, creds: str = "", *, replicas: int = 1, log_level: int = logging.INFO
) -> AsyncIterator[Edge]:
    """What an edge service (board-sync, telegram-gateway) stands on: a connection as its NATS `user`
    with the streams ensured, a FastStream broker for its subscribers, and the lag of the durable
    consumers that `user` owns exported while it stands. On exit the lag watch ends, the broker is
    stopped (unless the service already did, to order its own shutdown) and the connection drained."""
    nc = await connect(url, user, creds=creds)
    try:
        js = nc.jetstream()
        await ensure_streams(js, replicas)
        broker = NatsBroker(name=f"{user}-subscribers", log_level=log_level, **broker_options(url, user, creds))
        done = asyncio.Event()
        lag = asyncio.create_task(watch_consumer_lag(js, user, done)) if user in OWNED else None
        try:
            yield Edge(nc, js, broker)
        finally:
            done.set()
            if lag is not None:
                await lag
            if broker.running:
                await broker.stop()
    finally:
        await nc.drain()

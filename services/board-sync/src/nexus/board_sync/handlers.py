"""board-sync's subscribers: FastStream handlers on JetStream durable consumers. A provider outage
holds the change (the handler waits and tries again, telling JetStream it is still working), so
changes drain in order when the provider returns; a change a provider can never accept is
dead-lettered with the reason."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from faststream.nats import NatsBroker

from nexus.board_sync.providers.base import AuthFailed, ProviderError, Unavailable
from nexus.board_sync.resolver import MissingSecret
from nexus.board_sync.sync import Syncer
from nexus.events import payloads as p
from nexus.events.catalog import EVENTS_STREAM
from nexus.events.consumer import Delivery, Poison
from nexus.events.faststream import durable_subscriber

log = logging.getLogger("nexus.board_sync.handlers")
T = TypeVar("T")

DURABLES = {
    "board-sync-tasks": "nexus.evt.task.>",
    "board-sync-runs": "nexus.evt.run.>",
    "board-sync-external": "nexus.evt.board.external_changed",
}


def _epoch(iso: str) -> float | None:
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    return None


HOLD_MAX_S = 60.0  # the longest wait between two tries of a held change
TRY_S = 300.0  # the longest one try may take (each provider call has its timeout; a database call may not)


async def patiently(
    stop: asyncio.Event,
    backoff_s: float,
    d: Delivery,
    work: Callable[[], Awaitable[T]],
    *,
    beat_s: float = 10.0,
    try_s: float = TRY_S,
) -> T:
    """Run `work()` until it gets through: an outage (or a refused credential an admin will fix)
    keeps this message — and the ones behind it — waiting, never dropped. The wait doubles with each
    failed try (up to HOLD_MAX_S, or what the provider asked for), so a revoked token is not tried
    again every few seconds for as long as nobody fixes it. All along (a provider's slow answers
    and retries included), JetStream is told every `beat_s` that the message is still being worked
    on, so it is not delivered again meanwhile. Since that beat would hold a message for ever behind a
    call that never returns (a database that takes a request and never answers), one try past `try_s` is
    cut and held like an outage: every try is idempotent, so a try cut half-way is simply made again."""
    beat = asyncio.create_task(_still_working(d, beat_s))
    try:
        return await _tries(stop, backoff_s, d, work, try_s)
    finally:
        beat.cancel()


async def _still_working(d: Delivery, beat_s: float) -> None:
    while d.msg is not None:
        await asyncio.sleep(beat_s)
        with contextlib.suppress(Exception):
            await d.msg.in_progress()


async def _tries(
    stop: asyncio.Event, backoff_s: float, d: Delivery, work: Callable[[], Awaitable[T]], try_s: float
) -> T:
    tries = 0
    while True:
        try:
            async with asyncio.timeout(try_s):
                return await work()
        except (Unavailable, AuthFailed, MissingSecret, TimeoutError) as exc:
            if stop.is_set():
                raise  # nak: it is redelivered after the restart
            wait = getattr(exc, "retry_after_s", None) or min(backoff_s * 2**tries, HOLD_MAX_S)
            tries += 1
            if isinstance(exc, TimeoutError):
                log.warning("a try of %s took longer than %gs; holding it for %.2fs", d.subject, try_s, wait)
            elif isinstance(exc, Unavailable):
                log.warning("provider not reachable (%s); holding %s for %.2fs", exc, d.subject, wait)
            else:
                log.error(
                    "board credential not usable (%s): fix it in the provider settings; holding %s for %.2fs",
                    exc,
                    d.subject,
                    wait,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
        except ProviderError as exc:
            raise Poison(str(exc)) from exc


def register(
    broker: NatsBroker,
    syncer: Syncer,
    stop: asyncio.Event,
    *,
    backoff_s: float,
    max_deliver: int,
    ack_wait_s: float = 30.0,
    try_s: float = TRY_S,
) -> None:
    beat_s = ack_wait_s / 3  # well inside JetStream's ack wait

    async def on_task(d: Delivery) -> None:
        if isinstance(d.payload, p.TaskChanged):
            await patiently(
                stop,
                backoff_s,
                d,
                lambda: syncer.sync_task(d.payload.task_id, changed_at=_epoch(d.envelope.occurred_at)),
                beat_s=beat_s,
                try_s=try_s,
            )

    async def on_run(d: Delivery) -> None:
        if isinstance(d.payload, p.RunChanged):
            await patiently(
                stop,
                backoff_s,
                d,
                lambda: syncer.sync_task(d.payload.task_id, changed_at=_epoch(d.envelope.occurred_at)),
                beat_s=beat_s,
                try_s=try_s,
            )

    async def on_external(d: Delivery) -> None:
        if isinstance(d.payload, p.BoardExternalChanged):
            await patiently(stop, backoff_s, d, lambda: syncer.on_external(d.payload), beat_s=beat_s, try_s=try_s)

    for durable, handler in (
        ("board-sync-tasks", on_task),
        ("board-sync-runs", on_run),
        ("board-sync-external", on_external),
    ):
        durable_subscriber(
            broker,
            DURABLES[durable],
            handler,
            stream=EVENTS_STREAM,
            durable=durable,
            max_deliver=max_deliver,
            ack_wait_s=ack_wait_s,
            holds=True,  # held while a provider is out; each try bounded by `try_s`
        )

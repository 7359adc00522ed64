"""board-sync's entry point: projects the internal board onto Plane/Jira through one BoardProvider
contract, owns `board_links`, and handles verified webhooks forwarded by core-api."""

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from faststream.nats import NatsBroker

from nexus.board_sync.handlers import DURABLES, register
from nexus.board_sync.links import LinkStore
from nexus.board_sync.metrics import QUEUE_DEPTH
from nexus.board_sync.resolver import ProviderResolver
from nexus.board_sync.settings import BoardSyncSettings
from nexus.board_sync.sync import Syncer
from nexus.db.connection import connect_db
from nexus.db.documents import Task
from nexus.domain.settings import load_settings
from nexus.events.bus import Publisher, connect, ensure_streams
from nexus.events.faststream import broker_options
from nexus.events.lag import watch_consumer_lag
from nexus.events.catalog import EVENTS_STREAM
from nexus.observability.secrets import SecretStore
from nexus.observability.service import bootstrap, start_ops, stop_event_on_signals

log = logging.getLogger("nexus.board_sync")


async def _every(seconds: float, stop: asyncio.Event, fn) -> None:
    while seconds > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        if stop.is_set():
            return
        try:
            await fn()
        except Exception:  # noqa: BLE001 — a failed round must not stop the next
            log.warning("periodic %s failed", getattr(fn, "__name__", fn), exc_info=True)


async def serve(settings: BoardSyncSettings, environ: dict[str, str]) -> None:
    stop = stop_event_on_signals()
    db = await connect_db(settings.mongodb_url, settings.mongodb_db, create_indexes=False)
    database = Task.get_pymongo_collection().database
    links = LinkStore(database["board_links"])
    await links.ensure_indexes()
    nc = await connect(settings.nats_url, "board-sync", creds=settings.nats_creds)
    js = nc.jetstream()
    await ensure_streams(js, settings.jetstream_replicas)
    publisher = Publisher(js, "board-sync")

    async def cancel(cmd) -> None:
        await publisher.publish("core.cancel_task", cmd, correlation_id=cmd.task_id)

    resolver = ProviderResolver(database["board_providers"], SecretStore(Path(settings.secrets_dir), environ))
    syncer = Syncer(links, resolver, nexus_url=settings.api_url, cancel=cancel,
                    crash_after_create_file=settings.crash_after_create_file)
    broker = NatsBroker(name="board-sync-handlers", **broker_options(settings.nats_url, "board-sync", settings.nats_creds))
    register(broker, syncer, stop, backoff_s=settings.outage_backoff_s, max_deliver=settings.max_deliver,
             ack_wait_s=settings.ack_wait_s)

    async def queue_depth() -> None:
        for durable in DURABLES:
            info = await js.consumer_info(EVENTS_STREAM, durable)
            QUEUE_DEPTH.labels(durable).set(info.num_pending + info.num_ack_pending)

    async def ready() -> bool:
        return nc.is_connected

    ops = await start_ops(settings, ready)
    await broker.start()
    log.info("board-sync is following the board")
    try:
        await asyncio.gather(_every(settings.drift_interval_s, stop, syncer.reconcile), _every(5.0, stop, queue_depth),
                             watch_consumer_lag(js, "board-sync", stop), stop.wait())
    finally:
        await broker.stop()
        await resolver.aclose()
        await ops.stop()
        await nc.drain()
        await db.close()


def main() -> None:
    settings = load_settings(BoardSyncSettings, os.environ)
    bootstrap("board-sync", settings)
    asyncio.run(serve(settings, dict(os.environ)))


if __name__ == "__main__":
    main()

"""board-sync's entry point: projects the internal board onto Plane/Jira through one BoardProvider
contract, owns `board_links`, and handles verified webhooks forwarded by core-api."""

import asyncio
import logging
import os
from pathlib import Path

from nexus.board_sync.handlers import DURABLES, register
from nexus.board_sync.links import LinkStore
from nexus.board_sync.metrics import QUEUE_DEPTH
from nexus.board_sync.resolver import ProviderResolver
from nexus.board_sync.settings import BoardSyncSettings
from nexus.board_sync.sync import Syncer
from nexus.db.connection import Database, connect_db
from nexus.db.documents import Task
from nexus.domain.settings import load_settings
from nexus.events.bus import Publisher
from nexus.events.faststream import Edge, edge
from nexus.events.catalog import EVENTS_STREAM
from nexus.events.payloads import CancelTask
from nexus.observability.periodic import every
from nexus.observability.secrets import SecretStore
from nexus.observability.service import bootstrap, start_ops, stop_event_on_signals

log = logging.getLogger("nexus.board_sync")


async def serve(settings: BoardSyncSettings, environ: dict[str, str]) -> None:
    stop = stop_event_on_signals()
    db = await connect_db(settings.mongodb_url, settings.mongodb_db, create_indexes=False)
    try:
        database = Task.get_pymongo_collection().database
        links = LinkStore(database["board_links"])
        await links.ensure_indexes()
        bus = edge(settings.nats_url, "board-sync", settings.nats_creds, replicas=settings.jetstream_replicas)
        async with bus as connected:
            await _follow(settings, environ, connected, links, database, stop)
    finally:
        await db.close()


async def _follow(
    settings: BoardSyncSettings,
    environ: dict[str, str],
    bus: Edge,
    links: LinkStore,
    database: Database,
    stop: asyncio.Event,
) -> None:
    publisher = Publisher(bus.js, "board-sync")

    async def cancel(cmd: CancelTask) -> None:
        await publisher.publish("core.cancel_task", cmd, correlation_id=cmd.task_id)

    resolver = ProviderResolver(database["board_providers"], SecretStore(Path(settings.secrets_dir), environ))
    syncer = Syncer(
        links,
        resolver,
        nexus_url=settings.api_url,
        cancel=cancel,
        crash_after_create_file=settings.crash_after_create_file,
    )
    register(
        bus.broker,
        syncer,
        stop,
        backoff_s=settings.outage_backoff_s,
        max_deliver=settings.max_deliver,
        ack_wait_s=settings.ack_wait_s,
        try_s=settings.try_s,
    )

    async def queue_depth() -> None:
        for durable in DURABLES:
            info = await bus.js.consumer_info(EVENTS_STREAM, durable)
            QUEUE_DEPTH.labels(durable).set(info.num_pending + info.num_ack_pending)

    async def ready() -> bool:
        return bus.ready()

    ops = await start_ops(settings, ready)
    log.info("board-sync is following the board")
    try:
        await asyncio.gather(
            every(settings.drift_interval_s, stop, syncer.reconcile), every(5.0, stop, queue_depth), bus.serve(stop)
        )
    finally:
        await bus.broker.stop()  # no handler uses the providers' clients past this point
        await resolver.aclose()
        await ops.stop()


def main() -> None:
    settings = load_settings(BoardSyncSettings, os.environ)
    bootstrap("board-sync", settings)
    asyncio.run(serve(settings, dict(os.environ)))


if __name__ == "__main__":
    main()

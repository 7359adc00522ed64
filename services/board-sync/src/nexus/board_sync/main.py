"""board-sync's entry point. For now it follows task and goal events and keeps its ops port; the
Plane projection (owning `board_links`) comes with its own issue."""

import asyncio
import logging
import os

from nexus.domain.settings import load_settings
from nexus.events.bus import connect, ensure_streams
from nexus.events.catalog import EVENTS_STREAM
from nexus.events.consumer import Delivery, consume
from nexus.observability.service import CommonSettings, bootstrap, start_ops, stop_event_on_signals

log = logging.getLogger("nexus.board_sync")


class BoardSyncSettings(CommonSettings, kw_only=True):
    plane_url: str | None = None
    plane_workspace: str | None = None


async def on_board_event(d: Delivery) -> None:
    log.info("board event %s", d.envelope.type)


async def serve(settings: BoardSyncSettings) -> None:
    stop = stop_event_on_signals()
    nc = await connect(settings.nats_url, "board-sync", creds=settings.nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)

    async def ready() -> bool:
        return nc.is_connected

    ops = await start_ops(settings, ready)
    try:
        await asyncio.gather(
            consume(js, stream=EVENTS_STREAM, durable="board-sync-tasks", subject="nexus.evt.task.>", handler=on_board_event, stop=stop),
        )
    finally:
        await ops.stop()
        await nc.drain()


def main() -> None:
    settings = load_settings(BoardSyncSettings, os.environ)
    bootstrap("board-sync", settings)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()

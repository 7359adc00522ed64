"""telegram-gateway's entry point. Off without a token: it still connects, serves its ops port and
follows the events leads are alerted about; the chat-ops features come with their own issue."""

import asyncio
import logging
import os

from nexus.domain.settings import load_settings
from nexus.events.bus import connect, ensure_streams
from nexus.events.catalog import EVENTS_STREAM
from nexus.events.consumer import Delivery, consume
from nexus.observability.service import CommonSettings, bootstrap, start_ops, stop_event_on_signals

log = logging.getLogger("nexus.telegram_gateway")


class TelegramSettings(CommonSettings, kw_only=True):
    telegram_token: str | None = None
    telegram_api_url: str = "https://api.telegram.org"


async def on_alert(d: Delivery) -> None:
    log.info("alert-worthy event %s", d.envelope.type)


async def serve(settings: TelegramSettings) -> None:
    stop = stop_event_on_signals()
    nc = await connect(settings.nats_url, "telegram-gateway", creds=settings.nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)

    async def ready() -> bool:
        return nc.is_connected

    ops = await start_ops(settings, ready)
    if not settings.telegram_token:
        log.info("no NEXUS_TELEGRAM_TOKEN: Telegram is off; following alerts only")
    try:
        await asyncio.gather(
            consume(js, stream=EVENTS_STREAM, durable="telegram-approvals", subject="nexus.evt.approval.>", handler=on_alert, stop=stop),
        )
    finally:
        await ops.stop()
        await nc.drain()


def main() -> None:
    settings = load_settings(TelegramSettings, os.environ)
    bootstrap("telegram-gateway", settings)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()

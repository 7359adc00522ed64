"""telegram-gateway's entry point: the bot (polling or webhook), the alert subscribers and the outbox.
Without a token Telegram is off: the gateway still connects, follows the alert events and says so in
/readyz."""

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING

from nexus.domain.settings import load_settings
from nexus.events.bus import Publisher
from nexus.events.faststream import Edge, edge
from nexus.observability.service import bootstrap, start_ops, stop_event_on_signals
from nexus.telegram_gateway import outbox as outbox_mod
from nexus.telegram_gateway import store as store_mod
from nexus.telegram_gateway.alerts import Alerts
from nexus.telegram_gateway.core import CoreClient
from nexus.telegram_gateway.redact import redact_token_in_logs
from nexus.telegram_gateway.settings import TelegramSettings

if TYPE_CHECKING:  # main imports the bot only when a token is set
    from nexus.telegram_gateway.bot import Bot

log = logging.getLogger("nexus.telegram_gateway")


async def _start_bot(bot: "Bot", stop: asyncio.Event, status: dict[str, str]) -> None:
    """Telegram unreachable at start does not take the gateway down: it tries again with backoff."""
    delay = 1.0
    while not stop.is_set():
        try:
            await bot.start()
            status["telegram"] = f"on ({bot.settings.telegram_mode})"
            return
        except Exception as exc:  # noqa: BLE001 — reported in /readyz and retried
            status["telegram"] = f"starting: {type(exc).__name__}"
            log.warning("Telegram start failed (%s); retrying in %.0fs", exc, delay)
            with contextlib.suppress(Exception):
                await bot.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 60.0)


async def serve(settings: TelegramSettings) -> None:
    stop = stop_event_on_signals()
    # Each handled message is logged at debug level: alerts are counted in the consumer metrics instead.
    async with edge(settings.nats_url, "telegram-gateway", settings.nats_creds, log_level=logging.DEBUG) as bus:
        await _attend(settings, bus, stop)


async def _attend(settings: TelegramSettings, bus: Edge, stop: asyncio.Event) -> None:
    core = CoreClient(bus.nc, Publisher(bus.js, "telegram-gateway"), settings.telegram_rpc_timeout_s)
    store = await store_mod.ChatStore.open(bus.js)
    status = {"telegram": "off (no NEXUS_TELEGRAM_TOKEN)"}
    bot = outbox = None
    if settings.telegram_token:
        from nexus.telegram_gateway.bot import Bot

        redact_token_in_logs(settings.telegram_token)

        bot = Bot(settings, core, store)
        outbox = outbox_mod.Outbox(
            await store_mod.open_bucket(bus.js, outbox_mod.BUCKET),
            bot.deliver,
            settings.telegram_send_retry_s,
            sent=store.marks,
            posted=bot.posted,
        )
        bot.outbox = outbox
        status["telegram"] = "starting"
    else:
        log.info("no NEXUS_TELEGRAM_TOKEN: Telegram is off; following alerts only")
    Alerts(core, store, outbox, settings.telegram_link_base, stop=stop).register(bus.broker)

    async def ready() -> bool:
        return bus.ready()

    ops = await start_ops(settings, ready, lambda: f"telegram: {status['telegram']}")
    starting = None
    try:
        if bot is not None and outbox is not None:
            await outbox.start()
            starting = asyncio.create_task(_start_bot(bot, stop, status))
        await bus.serve(stop)
    finally:
        if starting is not None:
            starting.cancel()
        await bus.broker.stop()  # no alert reaches the outbox past this point
        if outbox is not None:
            await outbox.stop()
        if bot is not None:
            with contextlib.suppress(Exception):
                await bot.stop()
        await ops.stop()


def main() -> None:
    settings = load_settings(TelegramSettings, os.environ)
    bootstrap("telegram-gateway", settings)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its request lines carry the bot token in the URL
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()

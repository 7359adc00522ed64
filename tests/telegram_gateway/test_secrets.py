"""The bot token is a secret: a token Telegram rejects (python-telegram-bot's error names it) is
retried and reported without ever reaching the log."""

import logging

import pytest

from nexus.dev.servers import free_port
from nexus.events.faststream import edge
from nexus.telegram_gateway.main import _attend
from nexus.telegram_gateway.settings import TelegramSettings
from tests.telegram_gateway.fake_bot_api import FakeBotApi

pytestmark = pytest.mark.infra


async def test_a_rejected_token_never_reaches_the_log(
    nats_url: str, nats_auth, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    fake = FakeBotApi()
    await fake.start()
    wrong = "987654:REVOKED-secret-part"
    settings = TelegramSettings(
        nats_url=nats_url,
        nats_creds=str(nats_auth / "telegram-gateway.creds") if nats_auth else "",
        metrics_host="127.0.0.1",
        metrics_port=free_port(),
        telegram_token=wrong,
        telegram_api_url=fake.base_url,
    )
    stop = asyncio.Event()
    caplog.set_level(logging.DEBUG)

    async def serve() -> None:
        async with edge(settings.nats_url, "telegram-gateway", settings.nats_creds) as bus:
            await _attend(settings, bus, stop)

    task = asyncio.create_task(serve())
    try:
        # Telegram refused it twice: the first refusal was logged before the gateway tried again.
        await fake.wait(lambda: len([c for c in fake.calls if c.status == 404]) >= 2, "two refused starts", 60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await fake.stop()
    said = "\n".join(logging.Formatter().format(r) for r in caplog.records)
    assert "Telegram start failed" in said, said[-3000:]
    assert "REVOKED-secret-part" not in said

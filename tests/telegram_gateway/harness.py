"""The gateway in this test process (so its code is measured), against the real NATS, core-api as a
real process, and the fake Bot API: python-telegram-bot's real Application polls it over HTTP."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx

from nexus.dev.servers import free_port
from nexus.dev.stack import Stack
from nexus.events.faststream import edge
from nexus.telegram_gateway.main import _attend
from nexus.telegram_gateway.settings import TelegramSettings
from tests.telegram_gateway.fake_bot_api import FakeBotApi


def gateway_settings(stack: Stack, fake: FakeBotApi, **overrides: object) -> TelegramSettings:
    fields: dict[str, object] = {
        "nats_url": stack.nats_url,
        "nats_creds": stack.creds("telegram-gateway"),
        "metrics_host": "127.0.0.1",
        "metrics_port": free_port(),
        "telegram_token": fake.token,
        "telegram_api_url": fake.base_url,
        "telegram_poll_timeout_s": 1,
        "telegram_send_retry_s": 0.1,
        "telegram_rpc_timeout_s": 10.0,
        **overrides,
    }
    return TelegramSettings(**fields)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_gateway(settings: TelegramSettings, fake: FakeBotApi) -> AsyncIterator[None]:
    """The gateway serving until the block ends; it is up once Telegram answered its command menu."""
    stop = asyncio.Event()
    menus = len(fake.sent(None, "setMyCommands"))

    async def serve() -> None:
        async with edge(settings.nats_url, "telegram-gateway", settings.nats_creds, log_level=logging.DEBUG) as bus:
            await _attend(settings, bus, stop)

    task = asyncio.create_task(serve())
    try:
        await fake.wait(lambda: len(fake.sent(None, "setMyCommands")) > menus or task.done(), "the gateway's start")
        if task.done():
            task.result()
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def admin(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"}, timeout=30
    )


def asker(script: str) -> dict:
    """An agent whose every command waits for a lead's approval, its model the scripted `script`."""
    return {
        "name": "asker",
        "system_prompt": "test",
        "tools": ["run_command", "finish"],
        "permissions": {"commands": {"default": "ask"}},
        "llm": {"provider": "scripted", "script": script},
    }

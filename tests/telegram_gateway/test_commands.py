"""Every command and button as a lead, a viewer and a stranger would press them, with missing, extra,
garbage, very long and unicode arguments: each gets a clear reply that fits in a message, never a
crash or silence. The gateway runs in this process against real NATS, core-api as a real process
and the fake Bot API."""

import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from nexus.dev.stack import Stack
from nexus.telegram_gateway.text import LIMIT, units
from tests.e2e.conftest import running_stack
from tests.telegram_gateway.fake_bot_api import FakeBotApi
from tests.telegram_gateway.harness import admin, gateway_settings, running_gateway

pytestmark = [pytest.mark.infra, pytest.mark.e2e]

BASE = random.randrange(10**8, 10**9)
LEAD, VIEWER, STRANGER = BASE + 1, BASE + 2, BASE + 3


@pytest.fixture(scope="module")
def core(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, mongo_url: str, nats_auth: Path | None
) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("core"), nats_url, mongo_url, services=["core-api"], nats_auth=nats_auth
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
async def bot(core: Stack) -> AsyncIterator[FakeBotApi]:
    async with admin(core) as api:
        for user_id, identity, role in ((LEAD, "lead@example.com", "lead"), (VIEWER, "viewer@example.com", "viewer")):
            r = await api.post("/v1/chat-bindings", json={"user_id": str(user_id), "identity": identity, "role": role})
            assert r.status_code == 201, r.text
    fake = FakeBotApi()
    await fake.start()
    async with running_gateway(gateway_settings(core, fake), fake):
        yield fake
    await fake.stop()


async def reply_to(fake: FakeBotApi, user: int, text: str) -> list[str]:
    """Send `text` and wait for the reply (the messages sent to that chat since)."""
    before = len(fake.sent(user))
    await fake.send_text(user, text)
    await fake.wait(lambda: len(fake.sent(user)) > before, f"a reply to {text[:60]!r}")
    replies = [m["text"] for m in fake.sent(user)[before:]]
    assert all(units(r) <= LIMIT for r in replies)
    return replies


GARBAGE = [
    "/goal",
    "/goal    ",
    "/status nothing_like_this",
    "/status apr_",
    "/status 💥💥💥 <b>x</b>",
    "/approve",
    "/approve apr_nope",
    "/approve apr_nope because & <i>why</i>",
    "/reject",
    "/reject apr_nope",
    "/cancel",
    "/cancel run_nope",
    "/cancel goal_nope",
    "/subscribe",
    "/subscribe goal_nope",
    "/subscribe task_nope extra words",
    "/unsubscribe goal_nope",
    "/goals extra args",
    "/runs extra",
    "/approvals extra",
    "/agents 🤖",
    "/help me",
    "/nosuchcommand",
    "just words",
    "🙂",
]


@pytest.mark.parametrize("text", GARBAGE)
async def test_garbage_arguments_get_a_clear_reply(bot: FakeBotApi, text: str) -> None:
    (reply,) = await reply_to(bot, LEAD, text)
    assert reply.strip()
    assert "Traceback" not in reply


@pytest.mark.parametrize(
    "command", ["/status", "/approve", "/reject", "/cancel", "/subscribe", "/unsubscribe", "/goal"]
)
async def test_very_long_arguments_are_answered_within_the_limit(bot: FakeBotApi, command: str) -> None:
    # Telegram lets a user send 4096 characters; escaped, '<' grows fourfold.
    arg = ("<" * 2000) + ("😀" * 1000)
    replies = await reply_to(bot, LEAD, f"{command} {arg}")
    assert replies and all(r.strip() for r in replies)


async def test_in_a_group_a_command_for_another_bot_and_chatter_get_no_answer(bot: FakeBotApi) -> None:
    group = -BASE
    for text in ("/goals@some_other_bot", "/nosuchcommand@some_other_bot", "lunch anyone?"):
        await bot.send_text(LEAD, text, chat_id=group)
    # After them: a command addressed to this bot, one to no bot in particular, then /help.
    await bot.send_text(LEAD, "/goals@nexus_test_bot", chat_id=group)
    await bot.send_text(LEAD, "/nosuchcommand", chat_id=group)
    await bot.wait(lambda: len(bot.sent(group)) >= 2, "the replies in the group")
    await bot.send_text(LEAD, "/help", chat_id=group)
    await bot.wait(lambda: any("/unsubscribe" in m["text"] for m in bot.sent(group)), "the help in the group")
    replies = [m["text"] for m in bot.sent(group)]
    assert len(replies) == 3 and sum("did not understand" in r for r in replies) == 1, replies


async def test_telegram_errors_drop_what_cannot_succeed_retry_the_rest_and_never_block_the_chat(
    core: Stack, bot: FakeBotApi
) -> None:
    lead = BASE + 4  # a chat of its own: no reply of another test comes in between
    async with admin(core) as api:
        r = await api.post(
            "/v1/chat-bindings", json={"user_id": str(lead), "identity": "lead2@example.com", "role": "lead"}
        )
        assert r.status_code == 201, r.text

    def replies() -> list[tuple[int, dict]]:  # what was sent to this chat
        return [
            (c.status, c.params)
            for c in bot.calls
            if c.method == "sendMessage" and int(c.params.get("chat_id", 0)) == lead
        ]

    # 403 (the user blocked the bot): that reply is dropped, not retried; the next one still goes.
    bot.fail[f"sendMessage:{lead}"] = [(403, "Forbidden: bot was blocked by the user")]
    await bot.send_text(lead, "/status")
    await bot.wait(lambda: any(status == 403 for status, _ in replies()), "the refused send")
    await reply_to(bot, lead, "/agents")
    assert [s for s, p in replies() if "Active runs" in p["text"]] == [403]  # dropped, never retried

    # A network failure (502 from Telegram's side): retried until it goes, once.
    bot.fail[f"sendMessage:{lead}"] = [(502, "Bad Gateway"), (502, "Bad Gateway")]
    await bot.send_text(lead, "/approvals")

    def waiting(text: str) -> bool:
        return "No approval is waiting" in text or "Waiting approvals" in text

    await bot.wait(lambda: [p for s, p in replies() if s == 200 and waiting(p["text"])], "the retried reply")
    assert [s for s, p in replies() if waiting(p.get("text", ""))] == [502, 502, 200]

    # Telegram refuses the formatting: the words arrive, unformatted.
    bot.fail[f"sendMessage:{lead}"] = [(400, "Bad Request: can't parse entities: unsupported start tag")]
    await bot.send_text(lead, "/help")
    plain = await bot.wait(
        lambda: next(
            (p for s, p in replies() if s == 200 and "parse_mode" not in p and "/unsubscribe" in p["text"]), None
        ),
        "the help as plain words",
    )
    assert "<b>" not in plain["text"] and "you are lead2@example.com (lead)" in plain["text"]

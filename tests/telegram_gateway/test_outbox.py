"""The outbox against a real JetStream key-value bucket: a send that fails is retried later, in order,
and arrives once; a chat that cannot be reached does not hold up another; a restart resumes what was
left unsent; what Telegram refuses for good is dropped, not retried forever."""

import asyncio
import uuid

import pytest
from telegram.error import BadRequest, NetworkError

from nexus.events.bus import connect
from nexus.telegram_gateway.outbox import Outbox, Outgoing
from nexus.telegram_gateway.store import open_bucket

pytestmark = pytest.mark.infra


async def _until(predicate) -> None:
    for _ in range(400):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never held")


async def test_failed_sends_are_retried_in_order_without_blocking_other_chats(nats_url: str, nats_creds: str) -> None:
    nc = await connect(nats_url, "test-outbox", creds=nats_creds)
    kv = await open_bucket(nc.jetstream(), f"outbox_{uuid.uuid4().hex[:8]}")
    sent: list[tuple[int, str]] = []
    failures = {"a1": 2}  # chat 1's first message fails twice
    down = {3}  # chat 3 cannot be reached at all while the first outbox runs

    async def deliver(m: Outgoing) -> None:
        if m.chat_id in down:
            raise NetworkError("unreachable")
        if failures.get(m.text, 0) > 0:
            failures[m.text] -= 1
            raise NetworkError("flaky")
        if m.text == "refused":
            raise BadRequest("chat not found")
        sent.append((m.chat_id, m.text))

    first = Outbox(kv, deliver, retry_s=0.05)
    for chat, text in ((3, "c1"), (1, "a1"), (1, "a2"), (2, "b1"), (2, "refused"), (2, "b2")):
        await first.put(Outgoing(chat_id=chat, text=text))
    await _until(lambda: len(sent) == 4)
    assert [t for c, t in sent if c == 1] == ["a1", "a2"] and [t for c, t in sent if c == 2] == ["b1", "b2"]
    await first.stop()

    # A new process on the same bucket sends what chat 3 never got, once.
    down.clear()
    second = Outbox(kv, deliver, retry_s=0.05)
    await second.start()
    await _until(lambda: (3, "c1") in sent)
    await second.stop()
    assert sorted(sent) == [(1, "a1"), (1, "a2"), (2, "b1"), (2, "b2"), (3, "c1")]
    await nc.drain()

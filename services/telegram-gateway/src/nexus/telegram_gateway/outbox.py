"""Every alert goes through a durable outbox: written to a JetStream key-value bucket first, then sent
by one sender per chat, in order. A send that fails for a reason that may pass (network, Telegram's
flood control after the rate limiter's own retries) is retried later; one chat waiting never holds up
another, and a restart resumes from the bucket.

Telegram has no idempotency key, and a bot cannot read a chat back to see whether a message arrived. So
a message is recorded as tried before each send; a send whose outcome is unknown (the answer lost, or a
process killed between Telegram taking it and the outbox clearing it) is sent once more marked as a
possible repeat (`REPEAT`), never silently twice and never dropped."""

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import TypeVar

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue
from prometheus_client import Counter
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter

from nexus.domain.ids import new_ulid
from nexus.telegram_gateway.store import exists
from nexus.telegram_gateway.text import LIMIT, units

log = logging.getLogger("nexus.telegram_gateway.outbox")
BUCKET = "nexus_chat_outbox"
OUTBOX = Counter("nexus_telegram_outbox_total", "Outbox messages by outcome", ["outcome"])


class Outgoing(msgspec.Struct, kw_only=True):
    chat_id: int
    text: str  # HTML, already under the message limit
    edit_message_id: int | None = None  # edit this message instead of sending a new one (its buttons go)
    approval_id: str | None = None  # an approval alert: with its buttons, and where it was posted is remembered
    # A send was started and not known to have failed: whether Telegram took it is unknown (an edit needs no
    # such care: the same edit twice says the same).
    tried: bool = False


Deliver = Callable[[Outgoing], Awaitable[None]]
T = TypeVar("T")
_KEY_SAFE = re.compile(r"[A-Za-z0-9_=-]{1,64}")


def key_part(ident: str) -> str:
    """`ident` as one token of a key-value key: kept when it is one (a ULID sorts in time), else hashed."""
    return ident if _KEY_SAFE.fullmatch(ident) else hashlib.sha256(ident.encode()).hexdigest()[:40]


# What a message sent again after an unknown outcome says first (a note of its own when the message is full).
REPEAT = "↻ <i>Sent again: the first sending may have arrived too.</i>"
# httpx's failures that mean the request never left (python-telegram-bot raises its NetworkError from them).
_NOT_SENT = ("ConnectError", "ConnectTimeout", "PoolTimeout")


def may_have_arrived(exc: BaseException) -> bool:
    """Whether Telegram may have taken a send that failed with `exc`: the request left and its answer was
    lost (a timeout, a connection cut). A refusal, or a connection never made, took nothing."""
    cause = exc.__cause__
    return (
        isinstance(exc, NetworkError)
        and cause is not None
        and type(cause).__module__.startswith("httpx")
        and type(cause).__name__ not in _NOT_SENT
    )


def repeat_of(msg: Outgoing) -> list[Outgoing]:
    """What to send for `msg` when its earlier sending may have arrived: marked as a possible repeat."""
    if msg.edit_message_id is not None:
        return [msg]
    marked = f"{REPEAT}\n{msg.text}"
    if units(marked) <= LIMIT:
        return [msgspec.structs.replace(msg, text=marked)]
    return [Outgoing(chat_id=msg.chat_id, text=REPEAT), msg]


def _seconds(retry_after: int | timedelta) -> float:
    return retry_after.total_seconds() if isinstance(retry_after, timedelta) else float(retry_after)


class Outbox:
    def __init__(self, kv: KeyValue, deliver: Deliver, retry_s: float = 5.0, sent: KeyValue | None = None) -> None:
        self.kv, self.deliver, self.retry_s = kv, deliver, retry_s
        self.sent = sent  # where a message queued with an ident is marked sent (a bucket that forgets, in time)
        self._queues: dict[int, asyncio.Queue[str]] = {}
        self._senders: dict[int, asyncio.Task[None]] = {}
        self._stopping = False
        self._stopped = asyncio.Event()  # wakes the senders waiting to try again
        self._busy: set[int] = set()  # chats whose sender is in the middle of a message

    async def start(self) -> None:
        """Resume what a previous process left unsent."""
        try:
            keys = sorted(await self.kv.keys(), key=lambda k: k.split(".")[-1])
        except NoKeysError:
            keys = []
        for key in keys:
            try:
                chat_id = int(key.split(".")[0].replace("m", "-"))
            except ValueError:  # not one of ours: left alone
                log.warning("outbox key %s names no chat; skipped", key)
                continue
            self._enqueue(chat_id, key)

    async def put(self, msg: Outgoing, ident: str | None = None) -> None:
        """Queue a message. With `ident` (what it announces), a message queued already is not queued twice."""
        key = f"{str(msg.chat_id).replace('-', 'm')}.{ident or new_ulid()}"  # a KV key has no room for '-' first
        if ident is None:
            await self.kv.put(key, msgspec.json.encode(msg))
        else:
            if self.sent is not None and await exists(self.sent, f"sent.{key}"):  # sent already
                return
            try:
                await self.kv.create(key, msgspec.json.encode(msg))
            except KeyWrongLastSequenceError:  # still waiting to be sent
                return
        OUTBOX.labels("queued").inc()
        self._enqueue(msg.chat_id, key)

    def _enqueue(self, chat_id: int, key: str) -> None:
        q = self._queues.setdefault(chat_id, asyncio.Queue())
        q.put_nowait(key)
        if chat_id not in self._senders or self._senders[chat_id].done():
            self._senders[chat_id] = asyncio.create_task(self._send_loop(chat_id, q), name=f"outbox-{chat_id}")

    async def _send_loop(self, chat_id: int, q: asyncio.Queue[str]) -> None:
        while not self._stopping:
            key = await q.get()
            self._busy.add(chat_id)
            try:
                if not await self._one(chat_id, key):
                    return  # stopping: the entry stays for the next process
            finally:
                self._busy.discard(chat_id)

    async def _one(self, chat_id: int, key: str) -> bool:
        """Send the message under `key` and clear it; False if the outbox stopped first."""
        try:
            entry = await self._patiently(partial(self.kv.get, key), f"chat {chat_id}: reading the outbox")
        except KeyNotFoundError:  # sent already, by a previous process
            return True
        if self.sent is not None and await self._patiently(
            partial(exists, self.sent, f"sent.{key}"), f"chat {chat_id}: reading the marks"
        ):
            # Sent already: queued again by an event handled while its first copy was being sent (the
            # handler looked for the mark before it was written, and queued after the entry was cleared).
            OUTBOX.labels("duplicate").inc()
        else:
            if not await self._send_entry(chat_id, key, entry.value or b""):
                return False
        await self._patiently(partial(self.kv.delete, key), f"chat {chat_id}: clearing the outbox")
        return True

    async def _send_entry(self, chat_id: int, key: str, value: bytes) -> bool:
        """Send the entry's message and mark it sent; False if the outbox stopped first."""
        try:
            msg = msgspec.json.decode(value, type=Outgoing)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:  # can never be sent: not kept forever
            OUTBOX.labels("dropped").inc()
            log.error("chat %s: outbox entry %s is not a message (%s); dropped", chat_id, key, exc)
        else:
            if not await self._send(chat_id, key, msg):
                return False
            if self.sent is not None:  # a redelivered event finds its message sent, and queues it no more
                await self._patiently(partial(self.sent.put, f"sent.{key}", b"1"), f"chat {chat_id}: marking")
        return True

    async def _tried(self, chat_id: int, key: str, msg: Outgoing, tried: bool) -> Outgoing:
        """Record in the entry whether a send of it may have reached Telegram (before the send, and after one
        known to have failed), so that the next process knows what it cannot know otherwise."""
        if msg.edit_message_id is None and msg.tried != tried:
            msg = msgspec.structs.replace(msg, tried=tried)
            await self._patiently(partial(self.kv.put, key, msgspec.json.encode(msg)), f"chat {chat_id}: recording")
        return msg

    async def _send(self, chat_id: int, key: str, msg: Outgoing) -> bool:
        """Deliver until it is sent or can never be (True), or the outbox stops (False)."""
        attempt = 0
        repeat = msg.tried  # tried by a process that died: whether it arrived is unknown
        while not self._stopping:
            msg = await self._tried(chat_id, key, msg, True)
            try:
                for part in repeat_of(msg) if repeat else [msg]:
                    await self.deliver(part)
                OUTBOX.labels("repeated" if repeat and msg.edit_message_id is None else "sent").inc()
                return True
            except ChatMigrated as exc:  # a group became a supergroup: the message goes to its new id
                if msg.edit_message_id is not None:  # the message to edit stayed behind in the old chat
                    OUTBOX.labels("dropped").inc()
                    return True
                log.info("chat %s moved to %s; sending there", chat_id, exc.new_chat_id)
                msg = msgspec.structs.replace(msg, chat_id=exc.new_chat_id)
            except (BadRequest, Forbidden, InvalidToken) as exc:  # will never succeed: kept in the log
                OUTBOX.labels("dropped").inc()
                log.warning("chat %s: message dropped by Telegram: %s", chat_id, exc)
                return True
            except Exception as exc:  # noqa: BLE001 — anything else may pass: retried later
                attempt += 1
                OUTBOX.labels("retried").inc()
                if may_have_arrived(exc):
                    repeat = True
                elif not repeat:
                    msg = await self._tried(chat_id, key, msg, False)
                delay = min(self.retry_s * 2 ** min(attempt - 1, 5), 300.0)
                if isinstance(exc, RetryAfter):  # Telegram says how long its flood control lasts
                    delay = max(delay, _seconds(exc.retry_after))
                log.warning("chat %s: send failed (%s); retrying in %.1fs", chat_id, exc, delay)
                await self._pause(delay)
        return False

    async def _patiently(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        """A bucket operation, retried while the bus is out of reach (the sender must not die of it)."""
        attempt = 0
        while True:
            try:
                return await op()
            except KeyNotFoundError:
                raise
            except Exception as exc:  # the bus reconnects; the entry is still there
                attempt += 1
                if self._stopping:
                    raise
                delay = min(self.retry_s * 2 ** min(attempt - 1, 5), 30.0)
                log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
                await self._pause(delay)

    async def _pause(self, delay: float) -> None:
        """Wait before trying again; a stop ends the wait."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), delay)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop taking messages; a message being sent is let finish (within `grace_s`), so that a send
        Telegram took is also cleared from the bucket and not sent again by the next process."""
        self._stopping = True
        self._stopped.set()
        busy = [task for chat, task in self._senders.items() if chat in self._busy and not task.done()]
        if busy:
            await asyncio.wait(busy, timeout=grace_s)
        for task in self._senders.values():
            task.cancel()
        await asyncio.gather(*self._senders.values(), return_exceptions=True)

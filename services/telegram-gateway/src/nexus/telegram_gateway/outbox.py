"""Every alert goes through a durable outbox: written to a JetStream key-value bucket first, then sent
by one sender per chat, in order. A send that fails for a reason that may pass (network, Telegram's
flood control after the rate limiter's own retries) is retried later; one chat waiting never holds up
another, and a restart resumes from the bucket.

Each entry is sent once across processes: a sender claims it (compare-and-set) before sending, and no
other process sends it while that one beats (`presence`); Telegram's answer is recorded in the entry
before anything else, so a process killed after that leaves a message known sent, which the next one
only finishes (where an approval alert was posted, the marks) and never sends again. Telegram has no
idempotency key and a bot cannot read a chat back: a send whose outcome is unknown (the answer lost, or
the sender killed between Telegram taking it and that record) is sent once more marked as a possible
repeat (`REPEAT`), never silently twice and never dropped."""

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
from nexus.telegram_gateway.presence import PREFIX as BEAT_PREFIX
from nexus.telegram_gateway.presence import Presence
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
    sender: str | None = None  # the process that claimed it: no other sends it while that one beats
    delivered: bool = False  # Telegram took it: never sent again, only finished and cleared
    message_id: int | None = None  # the message Telegram made of it (a new message)


# Sends (or edits) one message; returns the id of the message a send made.
Deliver = Callable[[Outgoing], Awaitable[int | None]]
# Told where an approval alert was posted, once it is known sent (again after a restart: it must be idempotent).
Posted = Callable[[Outgoing, int], Awaitable[None]]
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


class _Lost(Exception):
    """Another process took the entry over (this one was judged gone): it is theirs to finish."""


class Outbox:
    def __init__(
        self,
        kv: KeyValue,
        deliver: Deliver,
        retry_s: float = 5.0,
        sent: KeyValue | None = None,
        *,
        posted: Posted | None = None,
        presence: Presence | None = None,
    ) -> None:
        self.kv, self.deliver, self.retry_s = kv, deliver, retry_s
        self.sent = sent  # where a message queued with an ident is marked sent (a bucket that forgets, in time)
        self.posted = posted
        self.presence = presence or Presence(kv)
        self._queues: dict[int, asyncio.Queue[str]] = {}
        self._senders: dict[int, asyncio.Task[None]] = {}
        self._stopping = False
        self._stopped = asyncio.Event()  # wakes the senders waiting to try again
        self._busy: set[int] = set()  # chats whose sender is in the middle of a message

    async def start(self) -> None:
        """Resume what a previous process left unsent (and what another live one sends: it is left to it)."""
        await self.presence.start()
        try:
            keys = sorted(await self.kv.keys(), key=lambda k: k.split(".")[-1])
        except NoKeysError:
            keys = []
        for key in keys:
            if key.startswith(BEAT_PREFIX):
                continue
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
        """Send the message under `key` (unless it is known sent, or another live process sends it) and
        clear it; False if the outbox stopped first."""
        what = f"chat {chat_id}: reading the outbox"
        while not self._stopping:
            try:
                entry = await self._patiently(partial(self.kv.get, key), what)
            except KeyNotFoundError:  # sent and cleared already (by this process, another or a previous one)
                return True
            msg = _decoded(chat_id, key, entry.value or b"")
            if msg is not None and not msg.delivered:
                if await self._marked_sent(chat_id, key):
                    # Sent already: queued again by an event handled while its first copy was being sent (the
                    # handler looked for the mark before it was written, and queued after the entry was cleared).
                    OUTBOX.labels("duplicate").inc()
                elif msg.sender not in (None, self.presence.me) and not await self._patiently(
                    partial(self.presence.silent, msg.sender), f"chat {chat_id}: hearing its sender"
                ):
                    await self._pause(self.presence.beat_s)  # another live process sends it: theirs to finish
                    continue
                else:
                    try:
                        msg = await self._send(chat_id, key, entry.revision or 0, msg)
                    except _Lost:
                        continue  # claimed by another process between our read and our claim: look again
                    if msg is None:
                        return False
            await self._finish(chat_id, key, msg)
            return True
        return False

    async def _marked_sent(self, chat_id: int, key: str) -> bool:
        if self.sent is None:
            return False
        return await self._patiently(partial(exists, self.sent, f"sent.{key}"), f"chat {chat_id}: reading the marks")

    async def _finish(self, chat_id: int, key: str, msg: Outgoing | None) -> None:
        """What follows a message known sent (or that can never be): where an approval alert was posted,
        the mark that keeps a redelivered event from queueing it again, and the entry cleared. Made again by
        the next process when this one dies half-way: each step is idempotent."""
        if msg is not None and msg.delivered and msg.approval_id and msg.message_id and self.posted is not None:
            try:
                await self.posted(msg, msg.message_id)
            except Exception:  # it was sent: where is not remembered, and the decision will not edit it
                log.warning("approval %s: where its alert was posted is not remembered", msg.approval_id, exc_info=True)
        if msg is not None and self.sent is not None:
            await self._patiently(partial(self.sent.put, f"sent.{key}", b"1"), f"chat {chat_id}: marking")
        await self._patiently(partial(self.kv.delete, key), f"chat {chat_id}: clearing the outbox")

    async def _record(self, chat_id: int, key: str, revision: int, msg: Outgoing) -> int:
        """Write `msg` into its entry if nobody else did since `revision` (our claim holds); its new revision.
        Raises `_Lost` when another process took the entry over."""
        value, what = msgspec.json.encode(msg), f"chat {chat_id}: recording"
        try:
            return await self._patiently(partial(self.kv.update, key, value, last=revision), what)
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            try:  # a retried write whose first try was taken (its answer lost) finds its own value
                entry = await self._patiently(partial(self.kv.get, key), what)
            except KeyNotFoundError:
                raise _Lost from None
            if entry.value != value:
                raise _Lost from None
            return entry.revision or 0

    async def _send(self, chat_id: int, key: str, revision: int, msg: Outgoing) -> Outgoing | None:
        """Claim the entry, deliver until it is sent or can never be, and record that (the delivered message),
        or None if the outbox stops first. Raises `_Lost` if another process claims or takes it over."""
        if self.presence.task is None:  # put before start(): beat first, or a claim would look abandoned
            await self._patiently(self.presence.start, f"chat {chat_id}: beating")
        attempt = 0
        # Claimed and tried before, by a process now gone (or this one, whose answer was lost): whether
        # Telegram took it is unknown.
        repeat = msg.tried
        took_over = msg.sender is not None and msg.sender != self.presence.me
        while not self._stopping:
            if msg.sender != self.presence.me or not msg.tried:
                msg = msgspec.structs.replace(msg, sender=self.presence.me, tried=True)
                revision = await self._record(chat_id, key, revision, msg)
            if took_over:
                OUTBOX.labels("taken_over").inc()
                took_over = False
            try:
                message_id = None
                for part in repeat_of(msg) if repeat else [msg]:
                    message_id = await self.deliver(part)
            except ChatMigrated as exc:  # a group became a supergroup: the message goes to its new id
                if msg.edit_message_id is not None:  # the message to edit stayed behind in the old chat
                    OUTBOX.labels("dropped").inc()
                    return msg
                log.info("chat %s moved to %s; sending there", chat_id, exc.new_chat_id)
                msg = msgspec.structs.replace(msg, chat_id=exc.new_chat_id)
                continue
            except (BadRequest, Forbidden, InvalidToken) as exc:  # will never succeed: kept in the log
                OUTBOX.labels("dropped").inc()
                log.warning("chat %s: message dropped by Telegram: %s", chat_id, exc)
                return msg
            except Exception as exc:  # noqa: BLE001 — anything else may pass: retried later
                attempt += 1
                OUTBOX.labels("retried").inc()
                if may_have_arrived(exc):
                    repeat = True
                elif not repeat:  # nothing reached Telegram: the next process may send it as it is
                    msg = msgspec.structs.replace(msg, tried=False)
                    revision = await self._record(chat_id, key, revision, msg)
                delay = min(self.retry_s * 2 ** min(attempt - 1, 5), 300.0)
                if isinstance(exc, RetryAfter):  # Telegram says how long its flood control lasts
                    delay = max(delay, _seconds(exc.retry_after))
                log.warning("chat %s: send failed (%s); retrying in %.1fs", chat_id, exc, delay)
                await self._pause(delay)
                continue
            OUTBOX.labels("repeated" if repeat and msg.edit_message_id is None else "sent").inc()
            msg = msgspec.structs.replace(msg, delivered=True, message_id=message_id)
            # Recorded before anything else: a process that dies from here on leaves it known sent, and the
            # next one finishes it without sending it again.
            with contextlib.suppress(_Lost):  # taken over meanwhile: the successor may repeat it, marked
                await self._record(chat_id, key, revision, msg)
            return msg
        return None

    async def _patiently(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        """A bucket operation, retried while the bus is out of reach (the sender must not die of it)."""
        attempt = 0
        while True:
            try:
                return await op()
            except (KeyNotFoundError, KeyWrongLastSequenceError):
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
        await self.presence.stop()


def _decoded(chat_id: int, key: str, value: bytes) -> Outgoing | None:
    """The entry's message; None (logged) for an entry that is not one, which can never be sent."""
    try:
        return msgspec.json.decode(value, type=Outgoing)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        OUTBOX.labels("dropped").inc()
        log.error("chat %s: outbox entry %s is not a message (%s); dropped", chat_id, key, exc)
        return None

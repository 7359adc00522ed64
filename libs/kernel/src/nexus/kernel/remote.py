"""Routing to agents hosted by other processes, over raw NATS (nats-py, no framework).

Each exposed agent has a subscription on `nexus.agent.<id>.inbox`. A send to an id that is
not local is published there with a reply subject; the receiving kernel delivers it to the
local mailbox with its own send timeout and answers with an empty body (delivered) or an
error name (AgentNotFound, MailboxClosed, ShuttingDown, SendTimeout), which the sender
raises. No subscriber at all is NATS's "no responders" status: AgentNotFound. No answer
within the send timeout + `margin`: SendTimeout. So a remote send fails like a local one.

Handler results (replies) addressed to a remote agent are published without a reply
subject: they are bounded by nothing on this side and so cannot deadlock; the receiving
kernel drops and reports them if they cannot be delivered in time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from typing import TYPE_CHECKING

import msgspec

from nexus.kernel.errors import (
    REMOTE_ERRORS,
    AgentNotFound,
    KernelError,
    RemoteError,
    SendTimeout,
)
from nexus.kernel.message import decode_message, encode_message

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from nexus.kernel.kernel import Kernel
    from nexus.kernel.message import Message

log = logging.getLogger("nexus.kernel.remote")

SUBJECT_PREFIX = "nexus.agent"
# A NATS subject token: no dots, no whitespace, no wildcards.
_TOKEN = re.compile(r"[^.\s*>]+")
NO_RESPONDERS = "503"
LINGER = 1.0  # seconds a withdrawn subscription keeps answering after the server dropped it


def inbox_subject(agent_id: str) -> str:
    return f"{SUBJECT_PREFIX}.{agent_id}.inbox"


class NatsRemote:
    def __init__(self, kernel: Kernel, nc: Client, *, margin: float = 1.0) -> None:
        self._kernel = kernel
        self._nc = nc
        self._margin = margin
        self._loop = asyncio.get_running_loop()
        self._subs: dict[str, Subscription] = {}
        self._subscribing: set[asyncio.Task[None]] = set()
        self._acks: dict[str, asyncio.Future[str]] = {}
        self._lingering: set[asyncio.Task[None]] = set()
        self._withdrawn: dict[str, int] = {}  # agent id -> its withdrawn subscriptions still lingering
        self._seen_while_withdrawn: dict[str, set[str]] = {}  # agent id -> message ids taken meanwhile
        self._seq = itertools.count(1)
        self._ack_prefix = ""
        self._ack_sub: Subscription | None = None
        self._outbound_lock = asyncio.Lock()
        self.sent = 0
        self.received = 0

    async def start(self, *, confirm: bool = True) -> None:
        """Expose the kernel's agents. With `confirm`, also the kernel's own inbox (replies to its asks)
        and the acknowledgements of its sends, and wait until the server knows them all. Without it,
        those two are written just before the kernel's first send (`_outbound`) — the server takes
        them before that send, so before any reply to it — and a kernel that never sends has neither."""
        if confirm:
            await self._outbound()
        for agent_id in self._kernel.agent_ids():
            self.expose(agent_id)
        await self.ready(confirm=confirm)

    async def _outbound(self) -> None:
        """The acknowledgement subscription and the kernel's own inbox, made once."""
        if self._ack_sub is not None:
            return
        async with self._outbound_lock:
            if self._ack_sub is not None:
                return
            self._ack_prefix = self._nc.new_inbox()
            ack_sub = await self._nc.subscribe(self._ack_prefix + ".*", cb=self._on_ack)
            if _TOKEN.fullmatch(self._kernel.id):  # replies to the kernel's own asks
                await self._subscribe(self._kernel.id)
            self._ack_sub = ack_sub

    # ---- exposure -----------------------------------------------------------------------

    def expose(self, agent_id: str) -> None:
        if not _TOKEN.fullmatch(agent_id):
            log.warning("agent id %r cannot be a NATS subject token; it stays local-only", agent_id)
            return
        task = self._loop.create_task(self._subscribe(agent_id))
        self._subscribing.add(task)
        task.add_done_callback(self._subscribing.discard)

    async def _subscribe(self, agent_id: str) -> None:
        sub = await self._nc.subscribe(inbox_subject(agent_id), cb=self._on_inbox)
        if agent_id in self._subs or (agent_id not in self._kernel and agent_id != self._kernel.id):
            await sub.unsubscribe()  # stopped (or exposed twice) while we subscribed
            return
        self._subs[agent_id] = sub

    def unexpose(self, agent_id: str) -> None:
        """Withdraw an agent: the server drops the interest at once, but the subscription keeps
        answering here for `LINGER` seconds. A publisher's routing runs concurrently with our
        UNSUB inside the server, so a message can still be handed to us just after it (even
        after the PONG that confirms it); dropping the subscription client-side at once would
        lose that message silently and leave its sender to time out. Lingering, it is answered
        AgentNotFound (the agent is gone) or delivered to a new agent of the same id."""
        sub = self._subs.pop(agent_id, None)
        if sub is None:
            return
        self._withdrawn[agent_id] = self._withdrawn.get(agent_id, 0) + 1
        self._seen_while_withdrawn.setdefault(agent_id, set())
        told = self._loop.create_task(self._withdraw(sub))
        self._subscribing.add(told)
        told.add_done_callback(self._subscribing.discard)
        lingering = self._loop.create_task(self._linger(agent_id, sub, told))
        self._lingering.add(lingering)
        lingering.add_done_callback(self._lingering.discard)

    async def _withdraw(self, sub: Subscription) -> None:
        # nats-py has no public "unsubscribe at the server, keep handling here"; drain() removes
        # the subscription right after the flush, which is the race described above.
        await self._nc._send_unsubscribe(sub._id)
        await self._nc.flush()

    async def _linger(self, agent_id: str, sub: Subscription, told: asyncio.Task[None]) -> None:
        try:
            await asyncio.wait([told])
            if not told.cancelled() and told.exception() is None:
                await asyncio.sleep(LINGER)
        finally:
            self._withdrawn[agent_id] -= 1
            if not self._withdrawn[agent_id]:
                del self._withdrawn[agent_id], self._seen_while_withdrawn[agent_id]
            try:
                await sub.unsubscribe()
            except Exception as exc:  # noqa: BLE001 — connection closing or closed: nothing left to undo
                log.debug("unsubscribe failed: %s", exc)

    async def ready(self, *, confirm: bool = True) -> None:
        """Wait until every exposure and withdrawal so far is known to the server; `confirm=False`:
        until each is written to the connection (no round trip), ahead of anything published after."""
        while self._subscribing:
            await asyncio.gather(*list(self._subscribing), return_exceptions=True)
        if confirm:
            await self._nc.flush()

    # ---- outbound -----------------------------------------------------------------------

    async def send(self, message: Message, timeout: float) -> None:
        to = message.to
        if not _TOKEN.fullmatch(to):
            raise AgentNotFound(to, "not a valid remote agent id")
        await self._outbound()
        token = f"{next(self._seq):x}"
        fut = self._loop.create_future()
        self._acks[token] = fut
        timer = self._loop.call_later(timeout + self._margin, _expire, fut)
        try:
            await self._nc.publish(inbox_subject(to), encode_message(message), reply=f"{self._ack_prefix}.{token}")
            self.sent += 1
            answer = await fut
        except KernelError:
            raise
        except Exception as exc:
            raise RemoteError(to, f"{type(exc).__name__}: {exc}") from exc
        finally:
            timer.cancel()
            del self._acks[token]
        if answer:
            raise REMOTE_ERRORS.get(answer, RemoteError)(to, "remote")

    async def publish(self, message: Message) -> None:
        """Fire and forget (handler results): the far side reports what it cannot deliver."""
        try:
            await self._nc.publish(inbox_subject(message.to), encode_message(message))
            self.sent += 1
        except Exception as exc:
            raise RemoteError(message.to, f"{type(exc).__name__}: {exc}") from exc

    async def _on_ack(self, msg: Msg) -> None:
        fut = self._acks.get(msg.subject[len(self._ack_prefix) + 1 :])
        if fut is None or fut.done():
            return
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            fut.set_result("AgentNotFound")
        else:
            fut.set_result(msg.data.decode())

    # ---- inbound ------------------------------------------------------------------------

    async def _on_inbox(self, msg: Msg) -> None:
        self.received += 1
        try:
            message = decode_message(msg.data)
        except msgspec.DecodeError as exc:
            log.warning("undecodable message on %s: %s", msg.subject, exc)
            if msg.reply:
                await msg.respond(b"RemoteError")
            return
        seen = self._seen_while_withdrawn.get(message.to)
        if seen is not None:
            # An earlier agent of this id is still draining its subscription while a new one
            # listens: the server may hand us the message on both. The first copy answers.
            if message.id in seen:
                return
            seen.add(message.id)
        answer = b""
        try:
            await self._kernel.receive(message)
        except KernelError as exc:
            answer = type(exc).__name__.encode()
            if not msg.reply:
                self._kernel.report_dropped(message, exc)
        if msg.reply:
            await msg.respond(answer)

    async def close(self) -> None:
        for task in list(self._subscribing):
            task.cancel()
        lingering = list(self._lingering)
        for task in lingering:
            task.cancel()  # each one unsubscribes on its way out
        await asyncio.gather(*lingering, return_exceptions=True)
        subs = list(self._subs.values())
        self._subs.clear()
        if self._ack_sub is not None:
            subs.append(self._ack_sub)
        for sub in subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # noqa: BLE001 — connection already closed: nothing left to undo
                log.debug("unsubscribe failed: %s", exc)
        for fut in self._acks.values():
            if not fut.done():
                fut.set_result("ShuttingDown")


def _expire(fut: asyncio.Future[str]) -> None:
    if not fut.done():
        fut.set_result(SendTimeout.__name__)

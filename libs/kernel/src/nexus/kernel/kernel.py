"""The kernel: spawn agents, route messages to their mailboxes, drain them, report.

Routing is one dict lookup. A send that finds room appends and returns without yielding;
only a full mailbox makes the sender wait (at most `send_timeout`). Each agent handles its
messages one at a time, in order, in a drain task that exists only while it has work
(and lingers a moment after: the Drainer in drain.py, which the kernel holds). A handler's
return value is routed like a send, bounded by the send timeout, so agents replying into each
other's full mailboxes cannot deadlock: the reply is dropped and reported instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal

from nexus.kernel import lifecycle
from nexus.kernel.agent import Agent, AgentFactory, is_agent, start_hook
from nexus.kernel.asks import PendingAsks
from nexus.kernel.config import KernelConfig
from nexus.kernel.drain import Drainer, Routes
from nexus.kernel.errors import (
    AgentNotFound,
    DuplicateAgent,
    KernelError,
    MailboxClosed,
    ReplyDropped,
    SendTimeout,
    ShuttingDown,
)
from nexus.kernel.mailbox import Mailbox
from nexus.kernel.message import Message
from nexus.kernel.stats import (
    AgentStats,
    KernelStats,
    ShutdownReport,
    agent_stats,
    kernel_stats,
)
from nexus.kernel.supervision import NEVER, RestartPolicy

if TYPE_CHECKING:
    from nexus.kernel.remote import NatsRemote

log = logging.getLogger("nexus.kernel")
ErrorHook = Callable[[KernelError], None]

# Seconds a drain task whose mailbox emptied waits for more before it ends (0: end at once).
LINGER = 1.0


class Kernel:
    """Create inside a running event loop; use `async with Kernel() as kernel:` or call shutdown()."""

    def __init__(
        self,
        config: KernelConfig | None = None,
        *,
        on_error: ErrorHook | None = None,
        id: str | None = None,
        linger: float = LINGER,
    ) -> None:
        self.config = config = config or KernelConfig()
        self.id = id or f"kernel-{os.urandom(6).hex()}"
        self._loop = asyncio.get_running_loop()
        self._send_timeout = config.send_timeout_ms / 1000
        self._handle_timeout = config.handle_timeout_ms / 1000
        self._capacity = config.mailbox_capacity
        self._asks = PendingAsks(self._loop)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_error = on_error
        self._remote: NatsRemote | None = None
        self._accepting = True
        self._shutdown_mode: str | None = None
        self._shutdown: asyncio.Task[ShutdownReport] | None = None
        self.send_timeouts = 0
        self.replies_dropped = 0
        routes = Routes(
            owner=self,
            deliver_nowait=self.deliver_nowait,
            deliver=self._deliver,
            fail_ask=self.fail_ask,
            report=self.report,
            background=self.background,
            retired=self._unexpose,
            closing=lambda: not self._accepting,
        )
        self._drainer = Drainer(self._loop, self._handle_timeout, linger, routes)
        # The send paths' own references (one attribute lookup each, as before the split).
        self._mailboxes: dict[str, Mailbox] = self._drainer.mailboxes
        self._schedule = self._drainer.schedule
        self._wake = self._drainer.wake

    async def __aenter__(self) -> Kernel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # ---- spawning -----------------------------------------------------------------------

    def spawn(
        self,
        agent: Agent | AgentFactory,
        *,
        restart: RestartPolicy = NEVER,
        mailbox_capacity: int | None = None,
        handle_timeout: float | None = None,
        remote: bool = True,
    ) -> str:
        """Register an agent (or a zero-argument factory of agents) and return its id.

        With `restart=RestartPolicy.on_failure(...)`, a factory gives a fresh instance on
        each restart; a plain instance is reused. `remote=False` keeps the agent
        unreachable from other processes even when NATS is attached.
        """
        if not self._accepting:
            raise ShuttingDown(getattr(agent, "id", None), "kernel is shutting down")
        factory = None
        if not is_agent(agent):
            if not callable(agent):
                raise TypeError(f"not an agent or an agent factory: {agent!r}")
            factory, made = agent, agent()
            if not is_agent(made):
                raise TypeError(f"factory returned a non-agent: {made!r}")
            agent = made
        agent_id = agent.id
        if agent_id in self._mailboxes:
            raise DuplicateAgent(agent_id, "an agent with this id is already running")
        if handle_timeout is None:
            handle_timeout = self._handle_timeout
        else:
            self._drainer.watchdog.tighten(handle_timeout)
        capacity = mailbox_capacity or self._capacity
        needs_start = start_hook(agent) is not None
        mb = Mailbox(agent, capacity, handle_timeout, restart, factory, needs_start)
        self._mailboxes[agent_id] = mb
        if needs_start:
            self._schedule(mb)
        if remote and self._remote is not None:
            self._remote.expose(agent_id)
        return agent_id

    def awaits_reply(self, message_id: str) -> bool:
        """An ask of this kernel is waiting for the reply to `message_id`."""
        return message_id in self._asks

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._mailboxes

    def agent_ids(self) -> list[str]:
        return list(self._mailboxes)

    def agent(self, agent_id: str) -> Agent:
        mb = self._mailboxes.get(agent_id)
        if mb is None:
            raise AgentNotFound(agent_id)
        return mb.agent

    @property
    def closing(self) -> bool:
        return not self._accepting

    # ---- sending ------------------------------------------------------------------------

    async def send(self, message: Message, *, timeout: float | None = None) -> None:
        """Put `message` in its recipient's mailbox, waiting at most `timeout` (default:
        send_timeout) for room. Raises AgentNotFound, MailboxClosed, ShuttingDown, SendTimeout."""
        mb = self._mailboxes.get(message.to)
        if mb is not None and self._accepting and mb.accepting:
            queue = mb.queue
            if len(queue) < mb.capacity and not mb.putters:
                queue.append(message)
                if mb.task is None:
                    self._schedule(mb)
                elif mb.waiter is not None:
                    self._wake(mb)
                return
        await self._send_slow(message, self._send_timeout if timeout is None else timeout)

    async def _send_slow(self, message: Message, timeout: float, *, remote: bool = True) -> None:
        to = message.to
        if not self._accepting and not (self._shutdown_mode == "drain" and message.from_ in self._mailboxes):
            raise ShuttingDown(to, "kernel is shutting down")
        mb = self._mailboxes.get(to)
        if mb is None:
            if remote and self._remote is not None:
                return await self._remote.send(message, timeout)
            raise AgentNotFound(to)
        if not mb.accepting:
            raise MailboxClosed(to)
        queue = mb.queue
        if len(queue) < mb.capacity and not mb.putters:
            queue.append(message)
            if mb.task is None:
                self._schedule(mb)
            elif mb.waiter is not None:
                self._wake(mb)
            return
        try:
            await mb.wait_put(self._loop, message, timeout)
        except SendTimeout:
            self.send_timeouts += 1
            raise

    async def ask(self, message: Message, *, timeout: float | None = None) -> Message:
        """Send `message` and wait for the message whose `reply_to` is its id.

        Raises what send raises, AskTimeout after `timeout` (default: handle_timeout; see
        asks.py for its precision), HandleTimeout / AgentFailed if the handler timed out or
        failed on this message, ShuttingDown if the kernel shut down meanwhile."""
        asks = self._asks
        mid = message.id
        if mid in asks:
            raise ValueError(f"message {mid} is already awaiting a reply")
        fut = asks.open(mid, message.to, self._handle_timeout if timeout is None else timeout)
        try:
            # send()'s fast path, inline: one coroutine less per round trip
            mb = self._mailboxes.get(message.to)
            if mb is not None and self._accepting and mb.accepting and len(mb.queue) < mb.capacity and not mb.putters:
                mb.queue.append(message)
                if mb.task is None:
                    self._schedule(mb)
                elif mb.waiter is not None:
                    self._wake(mb)
            else:
                await self._send_slow(message, self._send_timeout)
            return await fut
        finally:
            asks.close(mid)

    def fail_ask(self, message_id: str, error: BaseException) -> None:
        """End the ask waiting on `message_id` (if any) with `error` instead of a reply."""
        self._asks.fail(message_id, error)

    def _resolve_ask(self, reply: Message) -> bool:
        fut = self._asks.future(reply.reply_to)
        if fut is None:
            return False
        if not fut.done():
            fut.set_result(reply)
        return True

    # ---- delivery of handler results ----------------------------------------------------

    def deliver_nowait(self, message: Message) -> bool:
        """Resolve an ask or enqueue without waiting; False when that takes waiting (or fails)."""
        if message.reply_to is not None and self._resolve_ask(message):
            return True
        mb = self._mailboxes.get(message.to)
        if mb is None or not mb.accepting:
            return False
        queue = mb.queue
        if len(queue) >= mb.capacity or mb.putters:
            return False
        queue.append(message)
        if mb.task is None:
            self._schedule(mb)
        elif mb.waiter is not None:
            self._wake(mb)
        return True

    async def _deliver(self, message: Message) -> None:
        """Route a handler's result, bounded by the send timeout; failures are reported, not raised."""
        try:
            if self._remote is not None and message.to not in self._mailboxes:
                await self._remote.publish(message)
            else:
                await self._send_slow(message, self._send_timeout)
        except KernelError as exc:
            self.report_dropped(message, exc)

    def report_dropped(self, message: Message, exc: KernelError) -> None:
        self.replies_dropped += 1
        error = ReplyDropped(message.to, f"from {message.from_}: {type(exc).__name__}")
        error.__cause__ = exc
        self.report(error)

    async def receive(self, message: Message) -> None:
        """Deliver a message that arrived from another process: local agents only, send semantics."""
        if message.reply_to is not None and self._resolve_ask(message):
            return  # a reply to one of our asks gets in even while we shut down
        if not (self._accepting and self.deliver_nowait(message)):
            await self._send_slow(message, self._send_timeout, remote=False)

    async def connect_nats(self, nc: Any, *, margin: float = 1.0, confirm: bool = True) -> NatsRemote:
        """Route unknown ids over NATS and expose local agents on `nexus.agent.<id>.inbox`.
        The connection stays the caller's: shutdown unsubscribes but does not close it.
        Returns once the server knows every subscription (one round trip); `confirm=False`: once
        they are written to the connection — the server takes them before anything the caller
        publishes on it afterwards, which is all a caller that only needs that order waits for."""
        from nexus.kernel.remote import NatsRemote

        remote = NatsRemote(self, nc, margin=margin)
        self._remote = remote
        await remote.start(confirm=confirm)
        return remote

    @property
    def remote(self) -> NatsRemote | None:
        return self._remote

    async def deliver(self, message: Message) -> None:
        """Route a message the way a handler's return value is routed (used by bridges)."""
        if not self.deliver_nowait(message):
            await self._deliver(message)

    def report_failure(self, agent_id: str, exc: BaseException) -> None:
        """An agent's backing resource died (e.g. a bridged child exited): apply its restart policy."""
        self._drainer.report_failure(agent_id, exc)

    def _unexpose(self, agent_id: str) -> None:
        if self._remote is not None:
            self._remote.unexpose(agent_id)

    async def stop(self, agent_id: str, *, mode: Literal["drain", "drop"] = "drain", deadline: float = 5.0) -> None:
        """Stop one agent: refuse new messages, finish (drain) or discard (drop) queued ones
        within `deadline` seconds, cancel what is left, call on_stop, unregister."""
        await lifecycle.stop_agent(self._drainer, agent_id, mode, deadline)

    async def shutdown(self, mode: Literal["drain", "drop"] = "drain", deadline: float = 5.0) -> ShutdownReport:
        """Stop everything. `drain`: no new messages from outside, but agents finish their
        queues (and may message each other) until `deadline`; `drop`: queued messages are
        discarded and only running handlers finish. At the deadline, handlers are cancelled."""
        if self._shutdown is None:
            # Close the front door at once: from here on sends from outside raise ShuttingDown.
            self._accepting = False
            self._shutdown_mode = mode
            log.info("kernel %s shutting down (%s)", self.id, mode)
            begun = lifecycle.begin_shutdown(self._drainer, mode)
            self._shutdown = self._loop.create_task(self._shut_down(mode, deadline, begun))
        return await asyncio.shield(self._shutdown)

    async def _shut_down(self, mode: str, deadline: float, begun: lifecycle.Begun) -> ShutdownReport:
        loop = self._loop
        end = begun.started + deadline
        cancelled, dropped, agents = await lifecycle.retire_all(self._drainer, begun, end)
        self._asks.fail_all(ShuttingDown, "kernel shut down")
        self._asks.close_all()
        self._drainer.watchdog.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(end - loop.time(), lifecycle.STOP_HOOK_GRACE))
        if self._remote is not None:
            await self._remote.close()
        report = ShutdownReport(
            mode=mode,
            drained=self.total_handled() - begun.handled_before,
            dropped=dropped,
            cancelled=cancelled,
            agents=agents,
            elapsed=loop.time() - begun.started,
        )
        log.info("kernel %s shut down: %s", self.id, report)
        return report

    # ---- reporting ----------------------------------------------------------------------

    def report(self, error: KernelError) -> None:
        """Tell the kernel's error hook (or the log) about a failure nobody awaits."""
        if self._on_error is not None:
            try:
                self._on_error(error)
            except Exception:
                log.exception("on_error hook failed")
        else:
            log.warning("%s", error)

    def background(self, coro: Coroutine[Any, Any, Any] | Awaitable[Any], what: str) -> asyncio.Task[Any]:
        """Run `coro` as a task shutdown waits for; its failure is logged as `what`."""

        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("%s failed", what)

        task = self._loop.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def total(self, counter: str) -> int:
        """A counter (handled, failures, timeouts, restarts, dropped) over all agents ever run."""
        return self._drainer.total(counter)

    def total_handled(self) -> int:
        return self.total("handled")

    def stats(self, *, depths: bool = True) -> KernelStats:
        """Totals, and every agent's mailbox depth (`depths=False` skips the per-agent dict)."""
        return kernel_stats(self, self._drainer, len(self._asks), depths)

    def agent_stats(self, agent_id: str) -> AgentStats:
        mb = self._mailboxes.get(agent_id)
        if mb is None:
            raise AgentNotFound(agent_id)
        return agent_stats(mb)

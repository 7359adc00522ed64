"""How an agent's messages get handled: the lazily scheduled, lingering drain task.

A drain task exists only while an agent has work (or for `linger` seconds after, since
waking a parked task is much cheaper than creating one). It handles one message at a time,
routes the handler's result, and turns purposeful cancellations (handle timeout, the
agent's resource dying, stop/shutdown) into reports, supervision, or a clean exit.

The kernel holds one Drainer: it owns the mailboxes, their drain tasks, the watchdog and the
supervisor, and reaches the kernel only through the `Routes` it was built with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nexus.kernel.errors import HandleTimeout, KernelError, MailboxClosed
from nexus.kernel.mailbox import COUNTERS, PAUSED, STOPPED, TIMEOUT, Mailbox
from nexus.kernel.supervision import Supervisor
from nexus.kernel.watchdog import Watchdog

if TYPE_CHECKING:
    from nexus.kernel.message import Message

log = logging.getLogger("nexus.kernel")

# Messages an agent handles before it lets the rest of the loop run (Tokio's coop budget is 128).
BUDGET = 128


@dataclass(frozen=True, slots=True)
class Routes:
    """What the drainer asks of its kernel: where a handler's result goes, who hears of failures."""

    owner: Any  # handed to an agent's on_start: the kernel it runs in
    deliver_nowait: Callable[[Message], bool]  # True: routed without waiting
    deliver: Callable[[Message], Awaitable[None]]  # bounded by the send timeout; reports, never raises
    fail_ask: Callable[[str, BaseException], None]
    report: Callable[[KernelError], None]
    background: Callable[[Coroutine[Any, Any, Any] | Awaitable[Any], str], asyncio.Task[Any]]
    retired: Callable[[str], None]  # an agent left the kernel for good
    closing: Callable[[], bool]  # the kernel is shutting down: failures are not restarted


class Drainer:
    def __init__(self, loop: asyncio.AbstractEventLoop, handle_timeout: float, linger: float, routes: Routes) -> None:
        self.loop = loop
        self.linger = linger
        self.routes = routes
        self.mailboxes: dict[str, Mailbox] = {}
        self.retired = dict.fromkeys(COUNTERS, 0)  # counters of agents that already left
        self.idle_waiter: asyncio.Future[None] | None = None
        self.watchdog = Watchdog(loop, handle_timeout, self.handle_timed_out, self.unlinger, linger)
        self.supervisor = Supervisor(self)

    def total(self, counter: str) -> int:
        """A counter (handled, failures, timeouts, restarts, dropped) over all agents ever run."""
        return self.retired[counter] + sum(int(getattr(mb, counter)) for mb in self.mailboxes.values())

    def wake(self, mb: Mailbox) -> None:
        waiter = mb.waiter
        mb.waiter = None
        mb.wd_progress = -1  # the watchdog restarts its clock for this handle
        if waiter is not None:
            waiter.set_result(True)

    def schedule(self, mb: Mailbox) -> None:
        mb.task = self.loop.create_task(self._drain(mb))
        self.watchdog.watch(mb)

    async def _drain(self, mb: Mailbox) -> None:
        queue = mb.queue
        try:
            if mb.needs_start and not await self._start(mb):
                return
            handle = mb.agent.handle
            deliver_nowait = self.routes.deliver_nowait
            create_future = self.loop.create_future
            sleep0 = asyncio.sleep
            budget = BUDGET
            while True:
                while queue:
                    message = mb.current = queue.popleft()
                    if mb.putters:
                        mb.admit_putter()
                    try:
                        result = await handle(message)
                        # A handler that timed out (and swallowed the cancel) has no say any more.
                        if result is not None and mb.interrupt is None and not deliver_nowait(result):
                            await self.routes.deliver(result)
                    except asyncio.CancelledError:
                        if mb.interrupt is None:
                            raise
                    except Exception as exc:  # noqa: BLE001 — an agent's failure is its supervisor's to handle
                        self.supervisor.failed(mb, message, exc)
                        return
                    if mb.interrupt is not None:
                        if not self._interrupted(mb, message):
                            return
                        continue
                    mb.handled += 1
                    budget -= 1
                    if not budget:
                        # Cooperative budget: a busy agent yields now and then, so one long
                        # queue cannot hold the loop (and every other agent) for long.
                        budget = BUDGET
                        try:
                            await sleep0(0)
                        except asyncio.CancelledError:
                            if mb.interrupt is None:
                                raise
                            if not self._interrupted(mb, None):
                                return
                # Linger: an agent that just went idle is likely to get another message soon,
                # and waking a waiting task is much cheaper than creating one. The watchdog
                # ends lingering drains after `linger` seconds, so idle agents hold no task.
                mb.current = None  # an idle agent keeps no payload alive
                if not self.linger or not mb.accepting:
                    return
                waiter = mb.waiter = create_future()
                if not await waiter:
                    return
        finally:
            self._drained(mb, asyncio.current_task())

    async def _start(self, mb: Mailbox) -> bool:
        mb.needs_start = False
        mb.current = None
        try:
            await mb.agent.on_start(self.routes.owner)  # type: ignore[attr-defined]  # needs_start: it has one
        except asyncio.CancelledError:
            if mb.interrupt is None:
                raise
        except Exception as exc:  # noqa: BLE001 — an agent's failure is its supervisor's to handle
            self.supervisor.failed(mb, None, exc)
            return False
        return mb.interrupt is None or self._interrupted(mb, None)

    def handle_timed_out(self, mb: Mailbox) -> None:
        """Called by the watchdog: report now (even if the handler ignores the cancel), then cancel."""
        message = mb.current
        limit = f"{mb.handle_timeout * 1000:.0f} ms"
        if message is None:
            self.cancel_drain(mb, HandleTimeout(mb.id, f"on_start ran past {limit}"))
            return
        mb.timeouts += 1
        error = HandleTimeout(mb.id, f"handler ran past {limit}", message.id)
        self.routes.fail_ask(message.id, error)
        self.routes.report(error)
        self.cancel_drain(mb, TIMEOUT)

    def _interrupted(self, mb: Mailbox, message: Message | None) -> bool:
        """The drain was cancelled on purpose. True: go on with the next message."""
        reason, mb.interrupt = mb.interrupt, None
        task = mb.task
        if isinstance(task, asyncio.Task):
            task.uncancel()
        mb.wd_progress = -1  # the next message gets a full handle timeout
        if reason is TIMEOUT:
            return True  # already reported by handle_timed_out
        exc = reason if isinstance(reason, BaseException) else HandleTimeout(mb.id, "interrupted")
        self.supervisor.failed(mb, message, exc)
        return False

    def unlinger(self, mb: Mailbox) -> bool:
        """End a lingering drain (it exits without handling anything). True if there was one."""
        waiter = mb.waiter
        if waiter is None:
            return False
        mb.waiter = None
        waiter.set_result(False)
        return True

    def cancel_drain(self, mb: Mailbox, reason: object) -> bool:
        """Cancel `mb`'s drain task, telling it why (None: stop/shutdown, TIMEOUT, or an exception)."""
        task = mb.task
        if not isinstance(task, asyncio.Task) or task.done():
            return False
        mb.waiter = None
        mb.interrupt = reason
        task.cancel()
        task.add_done_callback(lambda t: self._after_cancel(mb, t))
        return True

    def _after_cancel(self, mb: Mailbox, task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never ran its `finally`: clean up here.
        if mb.task is not task:
            return
        reason, mb.interrupt = mb.interrupt, None
        self._drained(mb, task)
        if isinstance(reason, BaseException):
            self.supervisor.failed(mb, None, reason)
        elif mb.queue and mb.accepting:
            self.schedule(mb)

    def _drained(self, mb: Mailbox, task: asyncio.Task[None] | None) -> None:
        if mb.task is task:
            mb.task = None
        elif isinstance(mb.task, asyncio.Task):
            return  # a newer drain owns the mailbox now
        mb.waiter = None
        watched = self.watchdog.active
        watched.discard(mb)
        if self.idle_waiter is not None and not watched and not self.idle_waiter.done():
            self.idle_waiter.set_result(None)

    def report_failure(self, agent_id: str, exc: BaseException) -> None:
        """An agent's backing resource died (e.g. a bridged child exited): apply its restart policy."""
        mb = self.mailboxes.get(agent_id)
        if mb is None or mb.task is STOPPED or mb.task is PAUSED or mb.stopping is not None:
            return
        task = mb.task
        if task is not None and task is asyncio.current_task():
            raise exc
        if self.unlinger(mb) or not self.cancel_drain(mb, exc):
            self.supervisor.failed(mb, None, exc)

    # ---- leaving ------------------------------------------------------------------------

    def retire(self, mb: Mailbox, error: KernelError) -> asyncio.Task[Any] | None:
        """Take `mb` out of the kernel for good: refuse, drop, forget, then run on_stop
        (in the background; the returned task, if any, ends when on_stop has)."""
        if mb.task is STOPPED:
            return None
        self.supervisor.cancel_restart(mb)
        mb.accepting = False
        self.unlinger(mb)
        mb.fail_putters(MailboxClosed, "agent stopped")
        self.drop(mb, error)
        mb.task = STOPPED
        if self.mailboxes.get(mb.id) is mb:
            del self.mailboxes[mb.id]
            for counter in COUNTERS:
                self.retired[counter] += getattr(mb, counter)
        self.routes.retired(mb.id)
        hook = getattr(mb.agent, "on_stop", None)
        return self.routes.background(hook(), f"on_stop of {mb.id}") if hook is not None else None

    def drop(self, mb: Mailbox, error: KernelError) -> int:
        dropped = mb.take_all()
        for message in dropped:
            self.routes.fail_ask(message.id, error)
        mb.dropped += len(dropped)
        return len(dropped)

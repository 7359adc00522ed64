"""Stopping one agent and shutting the whole kernel down, each within a deadline."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from nexus.kernel.errors import AgentNotFound, MailboxClosed, ShuttingDown
from nexus.kernel.mailbox import PAUSED
from nexus.kernel.stats import ShutdownReport

if TYPE_CHECKING:
    from nexus.kernel.kernel import Kernel
    from nexus.kernel.mailbox import Mailbox

log = logging.getLogger("nexus.kernel")

# on_stop hooks (a bridged child exiting) get at least this long, even past the deadline.
STOP_HOOK_GRACE = 2.0


async def stop_agent(kernel: Kernel, agent_id: str, mode: str, deadline: float) -> None:
    mb = kernel._mailboxes.get(agent_id)
    if mb is None:
        raise AgentNotFound(agent_id)
    if mb.stopping is not None:
        await asyncio.shield(mb.stopping)
        return
    mb.stopping = kernel._loop.create_future()
    mb.accepting = False
    kernel._unlinger(mb)
    mb.fail_putters(MailboxClosed, "agent is stopping")
    _unpause(kernel, mb)
    if mode == "drop":
        kernel._drop(mb, MailboxClosed(agent_id, "agent stopped, queue dropped"))
    if mb.task is not None and mb.task is asyncio.current_task():
        # An agent stopping itself: the rest happens once this handler returns.
        kernel._background(_stop(kernel, mb, deadline), f"stop of {agent_id}")
        return
    await _stop(kernel, mb, deadline)


async def _stop(kernel: Kernel, mb: Mailbox, deadline: float) -> None:
    end = kernel._loop.time() + deadline
    try:
        await _finish(kernel, [mb], deadline)
        on_stop = kernel._retire(mb, MailboxClosed(mb.id, "agent stopped"))
        if on_stop is not None:
            await asyncio.wait([on_stop], timeout=max(end - kernel._loop.time(), STOP_HOOK_GRACE))
        log.info("agent %s stopped", mb.id)
    finally:
        assert mb.stopping is not None
        mb.stopping.set_result(None)


async def _finish(kernel: Kernel, mbs: list[Mailbox], deadline: float) -> int:
    """Wait up to `deadline` for these drains to end; cancel the rest. Returns how many were cancelled."""
    tasks = [mb.task for mb in mbs if isinstance(mb.task, asyncio.Task)]
    if not tasks:
        return 0
    _, running = await asyncio.wait(tasks, timeout=max(0.0, deadline))
    cancelled = 0
    for mb in mbs:
        if mb.task in running and kernel._cancel_drain(mb, None):
            cancelled += 1
    if running:
        await asyncio.wait(running)
    return cancelled


def _unpause(kernel: Kernel, mb: Mailbox) -> int:
    """An agent waiting out a restart backoff cannot drain: its queue is dropped."""
    if mb.task is not PAUSED:
        return 0
    kernel._supervisor.cancel_restart(mb)
    mb.task = None
    return kernel._drop(mb, ShuttingDown(mb.id, "agent was restarting"))


class Begun:
    """What shutdown did synchronously, before its first await."""

    def __init__(self, started: float, handled_before: int, dropped: int) -> None:
        self.started = started
        self.handled_before = handled_before
        self.dropped = dropped


def begin_shutdown(kernel: Kernel, mode: str) -> Begun:
    """Close the front door at once: from here on sends from outside raise ShuttingDown."""
    kernel._accepting = False
    kernel._shutdown_mode = mode
    kernel._linger = 0
    log.info("kernel %s shutting down (%s)", kernel.id, mode)
    begun = Begun(kernel._loop.time(), kernel.total_handled(), 0)
    for mb in list(kernel._watchdog.active):
        kernel._unlinger(mb)
    for mb in list(kernel._mailboxes.values()):
        begun.dropped += _unpause(kernel, mb)
        if mode == "drop":
            mb.accepting = False
            mb.fail_putters(ShuttingDown, "kernel is shutting down")
            begun.dropped += kernel._drop(mb, ShuttingDown(mb.id, "dropped at shutdown"))
    return begun


async def shutdown_kernel(kernel: Kernel, mode: str, deadline: float, begun: Begun) -> ShutdownReport:
    loop = kernel._loop
    end = begun.started + deadline
    dropped = begun.dropped
    watched = kernel._watchdog.active
    if watched:
        kernel._idle_waiter = loop.create_future()
        await asyncio.wait([kernel._idle_waiter], timeout=max(0.0, end - loop.time()))
        kernel._idle_waiter = None
    cancelled = await _finish(kernel, list(watched), 0)

    mbs = list(kernel._mailboxes.values())
    for mb in mbs:
        mb.accepting = False
        mb.fail_putters(ShuttingDown, "kernel is shutting down")
        dropped += len(mb.queue)
        kernel._retire(mb, ShuttingDown(mb.id, "kernel shut down"))
    kernel._asks.fail_all(ShuttingDown, "kernel shut down")
    kernel._asks.close_all()
    kernel._watchdog.close()
    if kernel._tasks:
        await asyncio.wait(list(kernel._tasks), timeout=max(end - loop.time(), STOP_HOOK_GRACE))
    if kernel._remote is not None:
        await kernel._remote.close()
    report = ShutdownReport(
        mode=mode,
        drained=kernel.total_handled() - begun.handled_before,
        dropped=dropped,
        cancelled=cancelled,
        agents=len(mbs),
        elapsed=loop.time() - begun.started,
    )
    log.info("kernel %s shut down: %s", kernel.id, report)
    return report

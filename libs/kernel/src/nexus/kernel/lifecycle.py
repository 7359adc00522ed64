"""Stopping one agent and shutting the whole kernel down, each within a deadline."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from nexus.kernel.errors import AgentNotFound, MailboxClosed, ShuttingDown
from nexus.kernel.mailbox import PAUSED

if TYPE_CHECKING:
    from nexus.kernel.drain import Drainer
    from nexus.kernel.mailbox import Mailbox

log = logging.getLogger("nexus.kernel")

# on_stop hooks (a bridged child exiting) get at least this long, even past the deadline.
STOP_HOOK_GRACE = 2.0


async def stop_agent(drainer: Drainer, agent_id: str, mode: str, deadline: float) -> None:
    mb = drainer.mailboxes.get(agent_id)
    if mb is None:
        raise AgentNotFound(agent_id)
    if mb.stopping is not None:
        await asyncio.shield(mb.stopping)
        return
    mb.stopping = drainer.loop.create_future()
    mb.accepting = False
    drainer.unlinger(mb)
    mb.fail_putters(MailboxClosed, "agent is stopping")
    _unpause(drainer, mb)
    if mode == "drop":
        drainer.drop(mb, MailboxClosed(agent_id, "agent stopped, queue dropped"))
    if mb.task is not None and mb.task is asyncio.current_task():
        # An agent stopping itself: the rest happens once this handler returns.
        drainer.routes.background(_stop(drainer, mb, deadline), f"stop of {agent_id}")
        return
    await _stop(drainer, mb, deadline)


async def _stop(drainer: Drainer, mb: Mailbox, deadline: float) -> None:
    loop = drainer.loop
    end = loop.time() + deadline
    try:
        await _finish(drainer, [mb], deadline)
        on_stop = drainer.retire(mb, MailboxClosed(mb.id, "agent stopped"))
        if on_stop is not None:
            await asyncio.wait([on_stop], timeout=max(end - loop.time(), STOP_HOOK_GRACE))
        log.info("agent %s stopped", mb.id)
    finally:
        assert mb.stopping is not None
        mb.stopping.set_result(None)


async def _finish(drainer: Drainer, mbs: list[Mailbox], deadline: float) -> int:
    """Wait up to `deadline` for these drains to end; cancel the rest. Returns how many were cancelled."""
    tasks = [mb.task for mb in mbs if isinstance(mb.task, asyncio.Task)]
    if not tasks:
        return 0
    _, running = await asyncio.wait(tasks, timeout=max(0.0, deadline))
    cancelled = 0
    for mb in mbs:
        if mb.task in running and drainer.cancel_drain(mb, None):
            cancelled += 1
    if running:
        await asyncio.wait(running)
    return cancelled


def _unpause(drainer: Drainer, mb: Mailbox) -> int:
    """An agent waiting out a restart backoff cannot drain: its queue is dropped."""
    if mb.task is not PAUSED:
        return 0
    drainer.supervisor.cancel_restart(mb)
    mb.task = None
    return drainer.drop(mb, ShuttingDown(mb.id, "agent was restarting"))


class Begun:
    """What shutdown did synchronously, before its first await."""

    def __init__(self, started: float, handled_before: int, dropped: int) -> None:
        self.started = started
        self.handled_before = handled_before
        self.dropped = dropped


def begin_shutdown(drainer: Drainer, mode: str) -> Begun:
    """What shutdown does at once, once the kernel refuses sends from outside: no more lingering,
    restarts given up, and in `drop` mode every queue emptied."""
    drainer.linger = 0
    begun = Begun(drainer.loop.time(), drainer.total("handled"), 0)
    for mb in list(drainer.watchdog.active):
        drainer.unlinger(mb)
    for mb in list(drainer.mailboxes.values()):
        begun.dropped += _unpause(drainer, mb)
        if mode == "drop":
            mb.accepting = False
            mb.fail_putters(ShuttingDown, "kernel is shutting down")
            begun.dropped += drainer.drop(mb, ShuttingDown(mb.id, "dropped at shutdown"))
    return begun


async def retire_all(drainer: Drainer, begun: Begun, end: float) -> tuple[int, int, int]:
    """Let the running drains finish until `end`, cancel the rest, retire every agent.
    Returns (handlers cancelled, messages dropped, agents stopped)."""
    loop = drainer.loop
    dropped = begun.dropped
    watched = drainer.watchdog.active
    if watched:
        drainer.idle_waiter = loop.create_future()
        await asyncio.wait([drainer.idle_waiter], timeout=max(0.0, end - loop.time()))
        drainer.idle_waiter = None
    cancelled = await _finish(drainer, list(watched), 0)

    mbs = list(drainer.mailboxes.values())
    for mb in mbs:
        mb.accepting = False
        mb.fail_putters(ShuttingDown, "kernel is shutting down")
        dropped += len(mb.queue)
        drainer.retire(mb, ShuttingDown(mb.id, "kernel shut down"))
    return cancelled, dropped, len(mbs)

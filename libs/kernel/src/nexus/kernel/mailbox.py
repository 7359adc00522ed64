"""One agent's place in the kernel: a bounded mailbox, its drain state and its counters.

The mailbox is *lazily scheduled*: an idle agent holds no task, only this record and an
empty deque. A drain task is created when a message arrives at an idle mailbox and ends
when the mailbox is empty again. Senders that find the mailbox full wait in `putters`;
the drain hands their message over as it frees a slot, so depth never exceeds capacity
and waiting senders are served in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from nexus.kernel.errors import KernelError, SendTimeout

if TYPE_CHECKING:
    from nexus.kernel.agent import Agent, AgentFactory
    from nexus.kernel.message import Message
    from nexus.kernel.supervision import RestartPolicy

# `Mailbox.task` is None when idle, a Task while draining, or one of these markers.
PAUSED = "paused"  # waiting out a restart backoff: accepts messages, does not drain
STOPPED = "stopped"  # left the kernel

# Per-agent counters; the kernel keeps the sums of agents that left so totals never shrink.
COUNTERS = ("handled", "failures", "timeouts", "restarts", "dropped")

# `Mailbox.interrupt` says why the drain task was cancelled (None: a plain cancel).
TIMEOUT = "timeout"


class Mailbox:
    __slots__ = (
        "agent",
        "capacity",
        "current",
        "dropped",
        "factory",
        "failures",
        "handle_timeout",
        "handled",
        "id",
        "interrupt",
        "needs_start",
        "policy",
        "putters",
        "queue",
        "restart_handle",
        "restart_times",
        "restarts",
        "stopping",
        "task",
        "timeouts",
        "accepting",
        "waiter",
        "wd_progress",
        "wd_since",
    )

    def __init__(
        self,
        agent: Agent,
        capacity: int,
        handle_timeout: float,
        policy: RestartPolicy,
        factory: AgentFactory | None,
        needs_start: bool,
    ) -> None:
        self.agent = agent
        self.id = agent.id
        self.capacity = capacity
        self.handle_timeout = handle_timeout
        self.policy = policy
        self.factory = factory
        self.needs_start = needs_start
        self.queue: deque[Message] = deque()
        self.current: Message | None = None  # the message being handled (for timeout reports)
        self.putters: deque[list[Any]] | None = None
        self.task: asyncio.Task[None] | str | None = None
        self.waiter: asyncio.Future[bool] | None = None  # set while the drain lingers
        self.accepting = True
        self.interrupt: Any = None
        self.stopping: asyncio.Future[None] | None = None
        self.restart_handle: asyncio.TimerHandle | None = None
        self.restart_times: deque[float] | None = None
        self.handled = 0
        self.failures = 0
        self.timeouts = 0
        self.restarts = 0
        self.dropped = 0
        self.wd_progress = -1
        self.wd_since = 0.0

    def progress(self) -> int:
        return self.handled + self.failures + self.timeouts

    async def wait_put(self, loop: asyncio.AbstractEventLoop, message: Message, timeout: float) -> None:
        """Wait (at most `timeout` seconds) until the drain hands `message` a slot."""
        fut = loop.create_future()
        entry = [message, fut]
        if self.putters is None:
            self.putters = deque()
        self.putters.append(entry)
        timer = loop.call_later(timeout, _expire, fut, self.id, timeout)
        try:
            await fut
        finally:
            timer.cancel()

    def admit_putter(self) -> None:
        """A slot just freed: move the oldest live waiting sender's message in."""
        putters = self.putters
        while putters:
            message, fut = putters.popleft()
            if not fut.done():
                self.queue.append(message)
                fut.set_result(None)
                return

    def fail_putters(self, error: type[KernelError], detail: str = "") -> None:
        putters = self.putters
        while putters:
            _, fut = putters.popleft()
            if not fut.done():
                fut.set_exception(error(self.id, detail))

    def take_all(self) -> list[Message]:
        messages = list(self.queue)
        self.queue.clear()
        return messages


def _expire(fut: asyncio.Future[None], agent_id: str, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(SendTimeout(agent_id, f"mailbox full for {timeout * 1000:.0f} ms"))

"""What the kernel reports about itself: counters, depths, and how a shutdown went."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from nexus.kernel.mailbox import PAUSED

if TYPE_CHECKING:
    from nexus.kernel.drain import Drainer
    from nexus.kernel.kernel import Kernel
    from nexus.kernel.mailbox import Mailbox


class AgentStats(msgspec.Struct, kw_only=True):
    id: str
    name: str
    depth: int
    capacity: int
    handled: int
    failures: int
    timeouts: int
    restarts: int
    dropped: int
    state: str  # idle | draining | restarting | stopping


class KernelStats(msgspec.Struct, kw_only=True):
    agents: int
    handled: int
    failures: int
    timeouts: int
    restarts: int
    dropped: int
    send_timeouts: int
    replies_dropped: int
    pending_asks: int
    draining: int  # drain tasks handling messages
    tasks: int  # drain tasks alive, handling or lingering; idle agents have none
    max_depth: int
    mailbox_depths: dict[str, int]
    remote_sent: int = 0
    remote_received: int = 0


class ShutdownReport(msgspec.Struct, kw_only=True):
    mode: str
    drained: int  # messages handled after shutdown began
    dropped: int  # messages discarded (drop mode, deadline, restarting agents)
    cancelled: int  # handlers still running at the deadline
    agents: int  # agents stopped
    elapsed: float


def kernel_stats(kernel: Kernel, drainer: Drainer, pending_asks: int, depths: bool) -> KernelStats:
    mbs = drainer.mailboxes.values()
    active = drainer.watchdog.active  # the mailboxes with a drain task (draining, or lingering)
    remote = kernel.remote
    return KernelStats(
        agents=len(mbs),
        handled=drainer.total("handled"),
        failures=drainer.total("failures"),
        timeouts=drainer.total("timeouts"),
        restarts=drainer.total("restarts"),
        dropped=drainer.total("dropped"),
        send_timeouts=kernel.send_timeouts,
        replies_dropped=kernel.replies_dropped,
        pending_asks=pending_asks,
        draining=sum(1 for mb in active if mb.waiter is None),
        tasks=len(active),
        max_depth=max((len(mb.queue) for mb in mbs), default=0),
        mailbox_depths={mb.id: len(mb.queue) for mb in mbs} if depths else {},
        remote_sent=remote.sent if remote else 0,
        remote_received=remote.received if remote else 0,
    )


def agent_stats(mb: Mailbox) -> AgentStats:
    task = mb.task
    if mb.stopping is not None:
        state = "stopping"
    elif task is PAUSED:
        state = "restarting"
    elif task is None or mb.waiter is not None:
        state = "idle"
    else:
        state = "draining"
    return AgentStats(
        id=mb.id,
        name=getattr(mb.agent, "name", mb.id),
        depth=len(mb.queue),
        capacity=mb.capacity,
        handled=mb.handled,
        failures=mb.failures,
        timeouts=mb.timeouts,
        restarts=mb.restarts,
        dropped=mb.dropped,
        state=state,
    )

"""Concurrency limits with priorities: a global and a per-agent limit on runs in flight in this worker.
Waiting launches are served highest priority first, then in order of arrival."""

import asyncio
import heapq
import itertools
from collections import Counter
from dataclasses import dataclass, field

from nexus.worker.metrics import ACTIVE, WAITING


@dataclass(order=True)
class Ticket:
    rank: tuple[int, int]
    agent_id: str = field(compare=False)
    granted: asyncio.Future[None] = field(compare=False, repr=False)


class Slots:
    def __init__(self, total: int, per_agent: int) -> None:
        self.total = total
        self.per_agent = per_agent
        self.held: dict[int, str] = {}  # id(ticket) -> agent_id
        self.by_agent: Counter[str] = Counter()
        self._waiting: list[Ticket] = []
        self._seq = itertools.count()

    @property
    def in_use(self) -> int:
        return len(self.held)

    def request(self, agent_id: str, priority: int = 0) -> Ticket:
        """Queue a request; it is granted by `grant()` (call it once a whole batch is queued, so the
        batch is served by priority rather than by who asked first)."""
        t = Ticket((-priority, next(self._seq)), agent_id, asyncio.get_running_loop().create_future())
        heapq.heappush(self._waiting, t)
        WAITING.set(len(self._waiting))
        return t

    def hold(self, agent_id: str) -> Ticket:
        """Take a slot now, over the limit if need be: for runs adopted after a restart."""
        t = Ticket((0, next(self._seq)), agent_id, asyncio.get_running_loop().create_future())
        self._take(t)
        return t

    def _take(self, t: Ticket) -> None:
        self.held[id(t)] = t.agent_id
        self.by_agent[t.agent_id] += 1
        t.granted.set_result(None)
        ACTIVE.set(len(self.held))

    def grant(self) -> None:
        skipped = []
        while self._waiting and len(self.held) < self.total:
            t = heapq.heappop(self._waiting)
            if t.granted.done():  # withdrawn
                continue
            if self.by_agent[t.agent_id] >= self.per_agent:
                skipped.append(t)
                continue
            self._take(t)
        for t in skipped:
            heapq.heappush(self._waiting, t)
        self._waiting = [t for t in self._waiting if not t.granted.done()]
        heapq.heapify(self._waiting)
        WAITING.set(len(self._waiting))

    async def acquire(self, agent_id: str, priority: int = 0) -> Ticket:
        t = self.request(agent_id, priority)
        self.grant()
        await t.granted
        return t

    def release(self, t: Ticket) -> None:
        """Give back a granted slot, or withdraw a request still waiting."""
        if id(t) in self.held:
            agent = self.held.pop(id(t))
            self.by_agent[agent] -= 1
            ACTIVE.set(len(self.held))
        elif not t.granted.done():
            t.granted.cancel()
        self.grant()

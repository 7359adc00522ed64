"""Shared bench machinery: the raw-asyncio baseline, the counting agent, paired trials."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nexus.kernel import Message, MessageKind


class Countdown:
    """Resolves `fut` when `left` reaches zero; shared by every agent of a run."""

    __slots__ = ("fut", "left")

    def __init__(self, n: int) -> None:
        self.left = n
        self.fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class CountingAgent:
    """The same handler object serves the kernel and the raw baseline."""

    __slots__ = ("done", "id", "name")

    def __init__(self, agent_id: str, done: Countdown | None = None) -> None:
        self.id = agent_id
        self.name = agent_id
        self.done = done

    async def handle(self, message: Message) -> Message | None:
        done = self.done
        done.left -= 1
        if done.left == 0:
            done.fut.set_result(None)
        return None


class RawKernel:
    """What a careful asyncio user writes without a kernel: one task + one asyncio.Queue per
    agent, a dict from id to queue, `await queue.put()`; a handler's result is ignored."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self.queues: dict[str, asyncio.Queue[Any]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def spawn(self, agent: Any) -> None:
        q: asyncio.Queue[Any] = asyncio.Queue(self.capacity)
        self.queues[agent.id] = q
        self.tasks.append(asyncio.get_running_loop().create_task(_raw_loop(q, agent.handle)))

    async def send(self, message: Message) -> None:
        await self.queues[message.to].put(message)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        self.queues.clear()


async def _raw_loop(q: asyncio.Queue[Any], handle: Callable[[Any], Awaitable[Any]]) -> None:
    get = q.get
    while True:
        message = await get()
        result = await handle(message)
        if result is not None:
            pass


def make_messages(n: int, ids: list[str], kind: MessageKind = MessageKind.EVENT) -> list[Message]:
    k = len(ids)
    return [Message(from_="bench", to=ids[i % k], kind=kind, payload=i) for i in range(n)]


async def settle() -> None:
    gc.collect()
    await asyncio.sleep(0)


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def paired(
    trials: int, raw: Callable[[], Awaitable[float]], kernel: Callable[[], Awaitable[float]]
) -> dict[str, Any]:
    """Run raw and kernel `trials` times each, alternating who goes first; values are rates
    (higher is better). Reports each side's median and the median of per-pair ratios."""
    raws: list[float] = []
    kernels: list[float] = []
    for i in range(trials):
        order = (raw, kernel) if i % 2 == 0 else (kernel, raw)
        out = {}
        for fn in order:
            await settle()
            out[fn] = await fn()
        raws.append(out[raw])
        kernels.append(out[kernel])
    ratios = [k / r for k, r in zip(kernels, raws, strict=True)]
    return {"raw": round(med(raws), 1), "kernel": round(med(kernels), 1), "ratio": round(med(ratios), 3)}


def now() -> float:
    return time.perf_counter()


async def loop_stalls_ms(seconds: float) -> dict[str, float]:
    """How late an otherwise idle event loop wakes from 1 ms sleeps on this machine right now:
    the floor under any latency figure (other tenants, the OS scheduler)."""
    late: list[float] = []
    end = now() + seconds
    while now() < end:
        t = now()
        await asyncio.sleep(0.001)
        late.append(now() - t - 0.001)
    return {"p99": round(pct(late, 0.99) * 1000, 3), "max": round(max(late) * 1000, 3)}

"""B5 request/response: round trips per second and per-request latency.

sequential: one asker, one echo agent, one request at a time.
concurrent: 100 askers, each with its own echo agent, all at once.
Kernel: `kernel.ask(message, timeout=5)` (reply routed by reply_to, timer per ask).
Raw: the request travels with a future through the agent's asyncio.Queue and the agent
task sets its result; raw has no timeout at all (a stricter baseline than a wait_for).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.kernel.common import med, now, pct, settle
from nexus.kernel import Kernel, Message, MessageKind


class Echo:
    __slots__ = ("id", "name")

    def __init__(self, agent_id: str) -> None:
        self.id = agent_id
        self.name = agent_id

    async def handle(self, message: Message) -> Message | None:
        return message.reply(self.id, message.payload)


async def _raw_echo_loop(q: asyncio.Queue[Any], handle: Any) -> None:
    while True:
        message, fut = await q.get()
        fut.set_result(await handle(message))


async def _askers(askers: int, per_asker: int, ask: Any) -> tuple[float, list[float]]:
    lat: list[float] = []

    async def one(k: int) -> None:
        to = f"e{k}"
        for i in range(per_asker):
            m = Message(from_="asker", to=to, kind=MessageKind.QUERY, payload=i)
            t = now()
            await ask(m)
            lat.append(now() - t)

    t0 = now()
    await asyncio.gather(*(one(k) for k in range(askers)))
    return askers * per_asker / (now() - t0), lat


async def run_raw(askers: int, per_asker: int) -> tuple[float, list[float]]:
    loop = asyncio.get_running_loop()
    queues: dict[str, asyncio.Queue[Any]] = {}
    tasks = []
    for k in range(askers):
        q: asyncio.Queue[Any] = asyncio.Queue(1024)
        queues[f"e{k}"] = q
        tasks.append(loop.create_task(_raw_echo_loop(q, Echo(f"e{k}").handle)))

    async def ask(m: Message) -> Message:
        fut = loop.create_future()
        await queues[m.to].put((m, fut))
        return await fut

    await asyncio.sleep(0)
    try:
        return await _askers(askers, per_asker, ask)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_kernel(askers: int, per_asker: int) -> tuple[float, list[float]]:
    kernel = Kernel()
    for k in range(askers):
        kernel.spawn(Echo(f"e{k}"))

    async def ask(m: Message) -> Message:
        return await kernel.ask(m, timeout=5.0)

    try:
        return await _askers(askers, per_asker, ask)
    finally:
        await kernel.shutdown()


async def run(quick: bool) -> dict[str, Any]:
    total = 20_000 if quick else 100_000
    trials = 3 if quick else 5
    out: dict[str, Any] = {"requests": total, "trials": trials, "unit": "round trips/s, latency ms"}
    for name, askers in (("sequential", 1), ("concurrent_100", 100)):
        rates: dict[str, list[float]] = {"raw": [], "kernel": []}
        p99: dict[str, list[float]] = {"raw": [], "kernel": []}
        ratios = []
        for i in range(trials):
            order = ("raw", "kernel") if i % 2 == 0 else ("kernel", "raw")
            res = {}
            for side in order:
                await settle()
                fn = run_raw if side == "raw" else run_kernel
                rate, lat = await fn(askers, total // askers)
                rates[side].append(rate)
                p99[side].append(pct(lat, 0.99) * 1000)
                res[side] = rate
            ratios.append(res["kernel"] / res["raw"])
        out[name] = {
            "raw": round(med(rates["raw"]), 1),
            "kernel": round(med(rates["kernel"]), 1),
            "ratio": round(med(ratios), 3),
            "p99_raw_ms": round(med(p99["raw"]), 4),
            "p99_kernel_ms": round(med(p99["kernel"]), 4),
            "p99_ratio": round(med(p99["kernel"]) / med(p99["raw"]), 3),
        }
    return out

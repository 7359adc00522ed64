"""B4 idle agents: memory per agent and spawn time, 10k and 100k agents.

Memory: tracemalloc's traced bytes after spawning (and letting the loop run once, so raw
tasks have started and parked in `queue.get()`) minus before, divided by the count. The
agent objects and their ids exist before measuring on both sides, so the figure is what
hosting costs: raw = one asyncio.Queue + one Task (+ its coroutine frame) + a dict entry;
kernel = one Mailbox record + an empty deque + a dict entry, and no task.
Spawn: wall time to spawn all and run the loop once, without tracemalloc, paired trials.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

from bench.kernel.common import CountingAgent, RawKernel, med, now, settle
from nexus.kernel import Kernel


async def _spawn_raw(agents: list[Any]) -> tuple[float, RawKernel]:
    raw = RawKernel()
    t0 = now()
    for a in agents:
        raw.spawn(a)
    await asyncio.sleep(0)
    return now() - t0, raw


async def _spawn_kernel(agents: list[Any]) -> tuple[float, Kernel]:
    kernel = Kernel()
    t0 = now()
    for a in agents:
        kernel.spawn(a)
    await asyncio.sleep(0)
    return now() - t0, kernel


async def _memory(n: int, side: str) -> float:
    agents = [CountingAgent(f"agent-{i}") for i in range(n)]
    await settle()
    host: Any = None
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        if side == "raw":
            _, host = await _spawn_raw(agents)
        else:
            _, host = await _spawn_kernel(agents)
        await asyncio.sleep(0)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    await _close(host)
    return (after - before) / n


async def _close(host: Any) -> None:
    if isinstance(host, RawKernel):
        await host.close()
    else:
        await host.shutdown()


async def run(quick: bool) -> dict[str, Any]:
    trials = 3 if quick else 5
    out: dict[str, Any] = {"trials": trials, "unit": "bytes per agent; spawn seconds"}
    for n in (10_000, 100_000):
        mem_raw = await _memory(n, "raw")
        mem_kernel = await _memory(n, "kernel")
        spawn_raw: list[float] = []
        spawn_kernel: list[float] = []
        ratios = []
        agents = [CountingAgent(f"agent-{i}") for i in range(n)]
        for i in range(trials):
            res = {}
            for side in ("raw", "kernel") if i % 2 == 0 else ("kernel", "raw"):
                await settle()
                dt, host = await (_spawn_raw(agents) if side == "raw" else _spawn_kernel(agents))
                res[side] = dt
                await _close(host)
            spawn_raw.append(res["raw"])
            spawn_kernel.append(res["kernel"])
            ratios.append(res["kernel"] / res["raw"])
        out[f"idle_{n}"] = {
            "bytes_per_agent_raw": round(mem_raw),
            "bytes_per_agent_kernel": round(mem_kernel),
            "spawn_s_raw": round(med(spawn_raw), 4),
            "spawn_s_kernel": round(med(spawn_kernel), 4),
            "spawn_time_ratio": round(med(ratios), 3),
        }
    return out

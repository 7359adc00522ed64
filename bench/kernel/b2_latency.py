"""B2 latency under load: a paced producer at 50% and 90% of raw's measured capacity.

Raw's rate: the highest rate raw's *paced* run keeps up with (p99 under 10 ms), searched
downwards from raw's unpaced throughput (10k agents, messages created on the fly).
Paced runs send message i at t0 + i/rate; latency is from that *intended* time to the
moment the handler runs, so a stalled loop shows up instead of being hidden
(no coordinated omission). Every agent handles one warm-up message first, so the kernel's
first-message cost (creating the drain task that raw creates at spawn) is not counted here;
B4 counts spawn. Both sides run with gc.freeze() after spawning (the standard
remedy for full collections walking long-lived objects); the collector stays on.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from bench.kernel.common import RawKernel, loop_stalls_ms, med, now, pct, settle
from nexus.kernel import Kernel, Message, MessageKind

N_AGENTS = 10_000
# A first estimate of capacity: the producer yields every CAPACITY_BATCH sends, so each
# message wakes one agent, as in the paced runs. Raw's rate is then the highest of
# estimate x SUSTAIN_STEPS that raw's paced run keeps up with (p99 under KEEPS_UP_MS).
CAPACITY_BATCH = 100
SUSTAIN_STEPS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
KEEPS_UP_MS = 10.0


class LatencyAgent:
    __slots__ = ("id", "lat", "name")

    def __init__(self, agent_id: str, lat: list[float]) -> None:
        self.id = agent_id
        self.name = agent_id
        self.lat = lat

    async def handle(self, message: Message) -> None:
        self.lat.append(now() - message.payload)


async def _paced(send: Any, ids: list[str], rate: float, count: int) -> None:
    """Send `count` messages at `rate` per second, stamped with their intended send time:
    the producer sends what has fallen due, yields to the loop, and looks again."""
    k = len(ids)
    t0 = now()
    i = 0
    while i < count:
        due = min(count, int((now() - t0) * rate) + 1)
        while i < due:
            await send(Message(from_="bench", to=ids[i % k], kind=MessageKind.EVENT, payload=t0 + i / rate))
            i += 1
        await asyncio.sleep(0)


async def _run(side: str, rate: float, count: int) -> list[float]:
    lat: list[float] = []
    ids = [f"a{i}" for i in range(N_AGENTS)]
    host: Any = RawKernel() if side == "raw" else Kernel()
    for agent_id in ids:
        host.spawn(LatencyAgent(agent_id, lat))
    for agent_id in ids:  # warm-up: every agent handles one message before the clock starts
        await host.send(Message(from_="bench", to=agent_id, kind=MessageKind.EVENT, payload=now()))
    while len(lat) < len(ids):
        await asyncio.sleep(0.001)
    lat.clear()
    await settle()
    gc.freeze()
    try:
        await _paced(host.send, ids, rate, count)
        while len(lat) < count:
            await asyncio.sleep(0.001)
    finally:
        gc.unfreeze()
        await (host.close() if side == "raw" else host.shutdown())
    return lat


async def _capacity(side: str, count: int) -> float:
    lat: list[float] = []
    ids = [f"a{i}" for i in range(N_AGENTS)]
    host: Any = RawKernel() if side == "raw" else Kernel()
    for agent_id in ids:
        host.spawn(LatencyAgent(agent_id, lat))
    await settle()
    t0 = now()
    for i in range(count):
        await host.send(Message(from_="bench", to=ids[i % N_AGENTS], kind=MessageKind.EVENT, payload=now()))
        if i % CAPACITY_BATCH == 0:
            await asyncio.sleep(0)
    while len(lat) < count:
        await asyncio.sleep(0)
    dt = now() - t0
    await (host.close() if side == "raw" else host.shutdown())
    return count / dt


async def run(quick: bool) -> dict[str, Any]:
    trials = 2 if quick else 3
    seconds = 1.0 if quick else 2.0
    estimate = med([await _capacity("raw", 100_000) for _ in range(trials)])
    capacity = estimate * SUSTAIN_STEPS[-1]
    for step in SUSTAIN_STEPS:
        await settle()
        lat = await _run("raw", estimate * step, int(estimate * step * seconds / 2))
        if pct(lat, 0.99) * 1000 <= KEEPS_UP_MS:
            capacity = estimate * step
            break
    out: dict[str, Any] = {
        "agents": N_AGENTS,
        "trials": trials,
        "raw_unpaced_msg_s": round(estimate),
        "raw_rate_msg_s": round(capacity),
        "unit": "ms",
    }
    for load in (0.5, 0.9):
        rate = capacity * load
        count = int(rate * seconds)
        stats: dict[str, dict[str, list[float]]] = {s: {"p50": [], "p99": [], "max": []} for s in ("raw", "kernel")}
        for i in range(trials):
            for side in ("raw", "kernel") if i % 2 == 0 else ("kernel", "raw"):
                await settle()
                lat = await _run(side, rate, count)
                stats[side]["p50"].append(pct(lat, 0.5) * 1000)
                stats[side]["p99"].append(pct(lat, 0.99) * 1000)
                stats[side]["max"].append(max(lat) * 1000)
        row = {f"{q}_{s}": round(med(stats[s][q]), 3) for s in ("raw", "kernel") for q in ("p50", "p99", "max")}
        row["p99_ratio"] = round(row["p99_kernel"] / row["p99_raw"], 3)
        row["rate_msg_s"] = round(rate)
        out[f"load_{int(load * 100)}"] = row
    out["idle_loop_stall_ms"] = await loop_stalls_ms(3.0)
    return out

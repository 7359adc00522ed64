"""B3 backpressure.

slow_agent: one agent taking ~2 ms per message, mailbox 64, send timeout 50 ms, flooded by
  100 producers for a fixed time (so most sends must wait and many time out). Records the
  deepest the mailbox ever got (sampled after every send and in the handler), the longest
  any single send took, how many sends timed out. Raw: asyncio.Queue(64) with `asyncio.wait_for(queue.put(m), 0.05)`.
hung_handler: 1000 agents, one of which never returns (the kernel cancels it after a
  100 ms handle timeout, again and again). A producer floods the hung agent while the main
  producer sends M messages round robin to the 999 healthy ones; the figure is the healthy
  throughput with the hung agent present divided by the same run without it (paired).
  Raw has no handle timeout: its hung agent just stops, its queue stays full.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.kernel.common import (
    Countdown,
    CountingAgent,
    RawKernel,
    loop_stalls_ms,
    make_messages,
    med,
    now,
    pct,
    settle,
)
from nexus.kernel import Kernel, KernelConfig, Message, MessageKind, SendTimeout

CAPACITY = 64
SEND_TIMEOUT = 0.05
PRODUCERS = 100
SLOW_HANDLE = 0.002


class SlowAgent:
    __slots__ = ("depth", "handled", "id", "name")

    def __init__(self, depth: Any) -> None:
        self.id = self.name = "slow"
        self.depth = depth
        self.handled = 0

    async def handle(self, message: Message) -> None:
        self.depth()
        self.handled += 1
        await asyncio.sleep(SLOW_HANDLE)


async def _flood(send: Any, depth: Any, seconds: float) -> dict[str, Any]:
    took: list[float] = []
    timeouts = [0]
    sent = [0]
    stop_at = now() + seconds

    async def producer() -> None:
        while now() < stop_at:
            m = Message(from_="bench", to="slow", kind=MessageKind.EVENT)
            t = now()
            try:
                await send(m)
                sent[0] += 1
            except (SendTimeout, TimeoutError):
                timeouts[0] += 1
            took.append(now() - t)
            depth()

    await asyncio.gather(*(producer() for _ in range(PRODUCERS)))
    return {
        "max_send_ms": round(max(took) * 1000, 2),
        "p99_send_ms": round(pct(took, 0.99) * 1000, 2),
        "send_timeouts": timeouts[0],
        "accepted": sent[0],
    }


async def slow_agent(seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"capacity": CAPACITY, "send_timeout_ms": SEND_TIMEOUT * 1000}
    # kernel
    kernel = Kernel(KernelConfig(mailbox_capacity=CAPACITY, send_timeout_ms=int(SEND_TIMEOUT * 1000)))
    deepest = [0]

    def kdepth() -> None:
        d = len(kernel._mailboxes["slow"].queue)
        deepest[0] = max(deepest[0], d)

    kernel.spawn(SlowAgent(kdepth))
    res = await _flood(kernel.send, kdepth, seconds)
    res["max_depth"] = deepest[0]
    await kernel.shutdown(mode="drop", deadline=1.0)
    out["kernel"] = res
    # raw
    await settle()
    raw = RawKernel(CAPACITY)
    rdeep = [0]

    def rdepth() -> None:
        rdeep[0] = max(rdeep[0], raw.queues["slow"].qsize())

    raw.spawn(SlowAgent(rdepth))

    async def raw_send(m: Message) -> None:
        await asyncio.wait_for(raw.queues[m.to].put(m), SEND_TIMEOUT)

    res = await _flood(raw_send, rdepth, seconds)
    res["max_depth"] = rdeep[0]
    await raw.close()
    out["raw"] = res
    return out


class HungAgent:
    __slots__ = ("id", "name")

    def __init__(self) -> None:
        self.id = self.name = "hung"

    async def handle(self, message: Message) -> None:
        await asyncio.Event().wait()


async def _healthy_rate(side: str, with_hung: bool, messages: list[Message]) -> float:
    done = Countdown(len(messages))
    host: Any
    if side == "kernel":
        host = Kernel(KernelConfig(send_timeout_ms=int(SEND_TIMEOUT * 1000), handle_timeout_ms=100))
    else:
        host = RawKernel()
    for i in range(999):
        host.spawn(CountingAgent(f"a{i}", done))
    stop = asyncio.Event()
    flood_task = None
    if with_hung:
        host.spawn(HungAgent())

        async def flood() -> None:
            while not stop.is_set():
                m = Message(from_="bench", to="hung", kind=MessageKind.EVENT)
                try:
                    if side == "kernel":
                        await host.send(m)
                    else:
                        await asyncio.wait_for(host.send(m), SEND_TIMEOUT)
                except (SendTimeout, TimeoutError):
                    pass
                await asyncio.sleep(0)

        flood_task = asyncio.get_running_loop().create_task(flood())
        await asyncio.sleep(0.2)  # the hung agent is stuck and its mailbox full before the clock starts
    t0 = now()
    for i, m in enumerate(messages, 1):
        await host.send(m)
        if i % 10 == 0:
            await asyncio.sleep(0)
    await done.fut
    rate = len(messages) / (now() - t0)
    stop.set()
    if flood_task is not None:
        await flood_task
    if side == "kernel":
        await host.shutdown(mode="drop", deadline=0.5)
    else:
        await host.close()
    return rate


async def hung_handler(quick: bool) -> dict[str, Any]:
    trials = 3 if quick else 5
    messages = make_messages(50_000 if quick else 200_000, [f"a{i}" for i in range(999)])
    out: dict[str, Any] = {"trials": trials, "healthy_messages": len(messages)}
    for side in ("kernel", "raw"):
        ratios, with_, without = [], [], []
        for i in range(trials):
            res = {}
            for hung in (True, False) if i % 2 == 0 else (False, True):
                await settle()
                res[hung] = await _healthy_rate(side, hung, messages)
            with_.append(res[True])
            without.append(res[False])
            ratios.append(res[True] / res[False])
        out[side] = {
            "healthy_msg_s_with_hung": round(med(with_)),
            "healthy_msg_s_without": round(med(without)),
            "ratio": round(med(ratios), 3),
        }
    return out


async def run(quick: bool) -> dict[str, Any]:
    return {
        "slow_agent": await slow_agent(1.0 if quick else 3.0),
        "hung_handler": await hung_handler(quick),
        "idle_loop_stall_ms": await loop_stalls_ms(3.0),
    }

"""B1 throughput: N agents, M messages, time from the first send until every message was
handled (never enqueue-only).

burst:       one producer sends all M messages back to back (round robin over agents).
interleaved: 100 producers, each yielding to the loop after every 10 sends, so producers
             and agent drains interleave finely.
Both sides send the same prebuilt Message objects and run the same handler object.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.kernel.common import (
    Countdown,
    CountingAgent,
    RawKernel,
    make_messages,
    now,
    paired,
)
from nexus.kernel import Kernel, KernelConfig

PRODUCERS = 100
YIELD_EVERY = 10


async def _produce(mode: str, send: Any, messages: list[Any]) -> None:
    if mode == "burst":
        for m in messages:
            await send(m)
        return

    async def producer(part: list[Any]) -> None:
        for i, m in enumerate(part, 1):
            await send(m)
            if i % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(producer(messages[k::PRODUCERS]) for k in range(PRODUCERS)))


async def run_raw(n_agents: int, messages: list[Any], mode: str) -> float:
    done = Countdown(len(messages))
    raw = RawKernel()
    for i in range(n_agents):
        raw.spawn(CountingAgent(f"a{i}", done))
    await asyncio.sleep(0)
    t0 = now()
    await _produce(mode, raw.send, messages)
    await done.fut
    dt = now() - t0
    await raw.close()
    return len(messages) / dt


async def run_kernel(n_agents: int, messages: list[Any], mode: str) -> float:
    done = Countdown(len(messages))
    kernel = Kernel(KernelConfig(mailbox_capacity=1024))
    for i in range(n_agents):
        kernel.spawn(CountingAgent(f"a{i}", done))
    await asyncio.sleep(0)
    t0 = now()
    await _produce(mode, kernel.send, messages)
    await done.fut
    dt = now() - t0
    await kernel.shutdown()
    return len(messages) / dt


async def run(quick: bool) -> dict[str, Any]:
    n_messages = 50_000 if quick else 200_000
    trials = 2 if quick else 5
    out: dict[str, Any] = {"messages": n_messages, "trials": trials, "unit": "msg/s"}
    for n_agents in (1_000, 10_000):
        messages = make_messages(n_messages, [f"a{i}" for i in range(n_agents)])
        for mode in ("burst", "interleaved"):
            out[f"{mode}_{n_agents}"] = await paired(
                trials,
                lambda n=n_agents, ms=messages, md=mode: run_raw(n, ms, md),
                lambda n=n_agents, ms=messages, md=mode: run_kernel(n, ms, md),
            )
    return out

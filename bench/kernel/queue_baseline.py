"""A plain asyncio-queue baseline (plain_queues.py, one queue per agent, run in a subprocess), and the
kernel measured the same way beside it.

Both figures time ONLY the enqueueing: 20,000 `put`s / `send`s round robin over 1,000
agents whose handler is `await asyncio.sleep(0)`; nothing waits for the messages to be
handled. That is why they are far above B1's numbers, which time until all are handled.
(plain_queues.py is the textbook design the kernel replaces, kept exactly as first written:
a queue and a task per agent.)
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

from bench.kernel.common import med, now, settle
from nexus.kernel import FunctionAgent, Kernel, Message, MessageKind

SCRIPT = Path(__file__).resolve().parent / "plain_queues.py"


async def queue_script() -> float:
    proc = await asyncio.create_subprocess_exec(sys.executable, str(SCRIPT), stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    match = re.search(rb"python_asyncio: (\d+) msg/s", out)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"plain-queue baseline failed: {out!r}")
    return float(match.group(1))


async def kernel_enqueue_only() -> float:
    kernel = Kernel()

    async def minimal(message: Message) -> None:
        await asyncio.sleep(0)

    ids = [f"a{i}" for i in range(1000)]
    for agent_id in ids:
        kernel.spawn(FunctionAgent(agent_id, minimal))
    for i in range(200):  # warmup, as the baseline does
        await kernel.send(Message(from_="bench", to=ids[i % 1000], kind=MessageKind.EVENT, payload=i))
    messages = [Message(from_="bench", to=ids[i % 1000], kind=MessageKind.EVENT, payload=i) for i in range(20_000)]
    t0 = now()
    for m in messages:
        await kernel.send(m)
    dt = now() - t0
    await kernel.shutdown()
    return 20_000 / dt


async def run(quick: bool) -> dict[str, Any]:
    trials = 3 if quick else 5
    queues, kernel = [], []
    for _ in range(trials):
        await settle()
        queues.append(await queue_script())
        await settle()
        kernel.append(await kernel_enqueue_only())
    return {
        "note": "enqueue-only: times the puts/sends, not the handling (see B1 for end-to-end)",
        "queue_script_msg_s": round(med(queues)),
        "kernel_same_pattern_msg_s": round(med(kernel)),
        "trials": trials,
    }

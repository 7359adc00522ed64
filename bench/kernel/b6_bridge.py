"""B6a bridge, pipelined: N requests to a child process, time until all N replies are back.

kernel: `spawn_bridge` on the example Python agent (examples/bridges/python); a producer
        sends N Query messages from a sink agent, the child's replies are routed back to
        the sink, which counts them. Flow control is the kernel's own (mailbox, outbox).
raw:    a raw asyncio parent on subprocess pipes: it writes the same encoded lines
        (awaiting drain()) and reads and decodes every reply line. Against two children:
  same_child  the same example agent the kernel runs (the target: it isolates what the
              kernel side of a bridge costs, since both sides pay the same child);
  json_child  raw_echo_child.py, which does only the JSON work per line (parse, build a
              reply, serialize): the end-to-end price of kernel + bridge library;
  plain       a child echoing bytes without parsing (information only).
Also: how long after a child's exit the kernel reported it (child's clock to report).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.kernel.common import Countdown, med, now, settle
from nexus.kernel import (
    AgentFailed,
    Kernel,
    KernelConfig,
    KernelError,
    Message,
    MessageKind,
)
from nexus.kernel.bridge import spawn_bridge
from nexus.kernel.bridge.protocol import encode_delivery

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EXAMPLE = [sys.executable, str(ROOT / "examples" / "bridges" / "python" / "example_agent.py")]
RAW_CHILD = [sys.executable, str(HERE / "raw_echo_child.py")]
EXIT_CHILD = [sys.executable, str(HERE / "exit_child.py")]


class Sink:
    __slots__ = ("done", "id", "name")

    def __init__(self, done: Countdown) -> None:
        self.id = self.name = "sink"
        self.done = done

    async def handle(self, message: Message) -> None:
        done = self.done
        done.left -= 1
        if done.left == 0:
            done.fut.set_result(None)


def _messages(n: int, to: str) -> list[Message]:
    return [Message(from_="sink", to=to, kind=MessageKind.QUERY, payload={"echo": i}) for i in range(n)]


async def run_kernel(n: int) -> float:
    kernel = Kernel(KernelConfig(mailbox_capacity=1024, send_timeout_ms=10_000))
    done = Countdown(n)
    kernel.spawn(Sink(done))
    agent_id = await spawn_bridge(kernel, EXAMPLE)
    messages = _messages(n, agent_id)
    await settle()
    t0 = now()
    for m in messages:
        await kernel.send(m)
    await done.fut
    rate = n / (now() - t0)
    await kernel.shutdown()
    return rate


async def run_raw(n: int, child: str = "same_child") -> float:
    command = {"same_child": EXAMPLE, "json_child": RAW_CHILD, "plain": [*RAW_CHILD, "--plain"]}[child]
    proc = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    if child == "same_child":
        await proc.stdout.readline()  # its register line
    lines = [encode_delivery(m) for m in _messages(n, "echo")]
    decode = msgspec.json.decode
    await settle()

    async def write() -> None:
        for i in range(0, n, 64):
            proc.stdin.write(b"".join(lines[i : i + 64]))
            await proc.stdin.drain()

    async def read() -> None:
        seen = 0
        while seen < n:
            decode(await proc.stdout.readline())
            seen += 1

    t0 = now()
    await asyncio.gather(write(), read())
    rate = n / (now() - t0)
    proc.stdin.close()
    await proc.wait()
    return rate


async def exit_notice_ms(times: int) -> list[float]:
    """Wall time from a child's own last clock reading before os._exit to the kernel's report."""
    stamps: list[float] = []
    pattern = re.compile(r"exit-at ([0-9.]+)")

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if m := pattern.search(record.getMessage()):
                stamps.append(float(m.group(1)))

    grab = Grab()
    bridge_log = logging.getLogger("nexus.kernel.bridge")
    bridge_log.addHandler(grab)
    bridge_log.setLevel(logging.INFO)
    bridge_log.propagate = False
    out: list[float] = []
    try:
        for _ in range(times):
            noticed: list[float] = []

            def on_error(error: KernelError, noticed: list[float] = noticed) -> None:
                if isinstance(error, AgentFailed):
                    noticed.append(time.time())

            kernel = Kernel(on_error=on_error)
            agent_id = await spawn_bridge(kernel, EXIT_CHILD)
            stamps.clear()
            await kernel.send(Message(from_="bench", to=agent_id, kind=MessageKind.COMMAND))
            while not (noticed and stamps):
                await asyncio.sleep(0.001)
            out.append((noticed[0] - stamps[0]) * 1000)
            await kernel.shutdown()
    finally:
        bridge_log.removeHandler(grab)
        bridge_log.setLevel(logging.NOTSET)
        bridge_log.propagate = True
    return out


async def run(quick: bool) -> dict[str, Any]:
    n = 20_000 if quick else 100_000
    trials = 2 if quick else 5
    sides = ("same_child", "json_child", "kernel")
    rates: dict[str, list[float]] = {side: [] for side in sides}
    same, json_ratio, plains = [], [], []
    for i in range(trials):
        res = {}
        for side in sides if i % 2 == 0 else sides[::-1]:
            await settle()
            res[side] = await (run_kernel(n) if side == "kernel" else run_raw(n, side))
            rates[side].append(res[side])
        same.append(res["kernel"] / res["same_child"])
        json_ratio.append(res["kernel"] / res["json_child"])
        plains.append(await run_raw(n, "plain"))
    notices = await exit_notice_ms(3 if quick else 5)
    return {
        "messages": n,
        "trials": trials,
        "unit": "round trips/s",
        "raw_same_child": round(med(rates["same_child"])),
        "raw_json_child": round(med(rates["json_child"])),
        "raw_plain_echo_no_json": round(med(plains)),
        "kernel": round(med(rates["kernel"])),
        "ratio": round(med(same), 3),
        "ratio_vs_json_child": round(med(json_ratio), 3),
        "exit_notice_ms_median": round(med(notices), 2),
        "exit_notice_ms_max": round(max(notices), 2),
    }

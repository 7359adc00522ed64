"""`nexus-kernel demo`: N agents passing tokens around a ring, with live throughput.

Each agent starts holding one token and hands every token it receives to the next agent
(by returning a message, which the kernel routes). The demo's classic messages are sent too:
a ping Event to the first agent and `calculate` Commands along the chain, answered 42.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from typing import TextIO

from nexus.kernel.config import NexusConfig
from nexus.kernel.kernel import Kernel
from nexus.kernel.message import Message, MessageKind

log = logging.getLogger("nexus.kernel.demo")


class RingAgent:
    def __init__(self, index: int, ring: list[str], running: asyncio.Event) -> None:
        self.id = ring[index]
        self.name = f"Agent-{index}"
        self.next = ring[(index + 1) % len(ring)]
        self.running = running
        self.chatty = index < 3  # the first few log what they do at info; the rest at debug

    async def handle(self, message: Message) -> Message | None:
        payload = message.payload if isinstance(message.payload, dict) else {}
        if "token" in payload:
            if not self.running.is_set():
                return None  # stopping: let tokens fall out of the ring so it can drain
            return Message(from_=self.id, to=self.next, kind=MessageKind.EVENT, payload=payload)
        if message.kind == MessageKind.COMMAND and "calculate" in payload:
            self._log("%s calculates %s for %s", self.name, payload["calculate"], message.from_)
            return message.reply(self.id, {"result": 42, "agent": self.name})
        if message.kind == MessageKind.RESPONSE:
            self._log("%s got a response from %s: %s", self.name, message.from_, payload)
            return None
        self._log("%s received %s from %s: %s", self.name, message.kind, message.from_, payload)
        return None

    def _log(self, fmt: str, *args: object) -> None:
        log.log(logging.INFO if self.chatty else logging.DEBUG, fmt, *args)


async def run_demo(config: NexusConfig, num_agents: int, duration: float, out: TextIO = sys.stdout) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread / not supported
            pass
    running = asyncio.Event()
    running.set()
    kernel = Kernel(config.kernel)
    ring = [f"agent-{i}" for i in range(num_agents)]
    for i in range(num_agents):
        kernel.spawn(RingAgent(i, ring, running))
    log.info("spawned %d agents (mailbox %d)", num_agents, config.kernel.mailbox_capacity)

    system = "system"
    if num_agents >= 2:
        await kernel.send(Message(from_=system, to=ring[0], kind=MessageKind.EVENT, payload={"status": "ping"}))
        for i in range(num_agents - 1):
            await kernel.send(
                Message(from_=ring[i], to=ring[i + 1], kind=MessageKind.COMMAND, payload={"calculate": f"task-{i}"})
            )
    for agent_id in ring:
        await kernel.send(Message(from_=system, to=agent_id, kind=MessageKind.EVENT, payload={"token": agent_id}))

    print(f"nexus-kernel demo: {num_agents} agents, " + (f"{duration:g}s" if duration else "until Ctrl-C"), file=out)
    started = last_t = time.perf_counter()
    last_handled = 0
    while not stop.is_set():
        remaining = duration - (time.perf_counter() - started) if duration else 1.0
        if remaining <= 0:
            break
        try:
            await asyncio.wait_for(stop.wait(), min(1.0, remaining))
        except TimeoutError:
            pass
        now = time.perf_counter()
        stats = kernel.stats(depths=False)
        rate = (stats.handled - last_handled) / (now - last_t)
        last_handled, last_t = stats.handled, now
        print(
            f"[{now - started:7.1f}s] agents={stats.agents} handled={stats.handled:,} rate={rate:,.0f} msg/s "
            f"max_depth={stats.max_depth} timeouts={stats.timeouts} restarts={stats.restarts}",
            file=out,
            flush=True,
        )
    running.clear()
    report = await kernel.shutdown(mode="drain", deadline=5.0)
    elapsed = time.perf_counter() - started
    total = kernel.stats(depths=False).handled
    print(
        f"done: {total:,} messages in {elapsed:.1f}s ({total / elapsed:,.0f} msg/s); "
        f"shutdown drained {report.drained}, dropped {report.dropped}, cancelled {report.cancelled}",
        file=out,
    )
    return 0

"""Helpers shared by the kernel tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nexus.kernel import Message, MessageKind


def msg(to: str, payload: Any = None, kind: MessageKind = MessageKind.COMMAND, from_: str = "test") -> Message:
    return Message(from_=from_, to=to, kind=kind, payload=payload)


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition the kernel reaches on its own (no event to await), without timing it."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


class Recorder:
    """An agent that records payloads; optionally blocks each handle on a gate."""

    def __init__(self, agent_id: str, gate: asyncio.Event | None = None) -> None:
        self.id = agent_id
        self.name = agent_id
        self.seen: list[Any] = []
        self.gate = gate
        self.entered = asyncio.Event()
        self.changed = asyncio.Event()

    async def handle(self, message: Message) -> Message | None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self.seen.append(message.payload)
        self.changed.set()
        if message.kind == MessageKind.QUERY:
            return message.reply(self.id, {"seen": message.payload})
        return None

    async def wait_seen(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.seen) < count:
                self.changed.clear()
                await self.changed.wait()

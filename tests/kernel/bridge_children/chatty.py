"""Writes lines that are not protocol before and between good answers."""

import sys

import _path  # noqa: F401 — puts the test helpers on sys.path
from nexus_bridge import Agent, run

GARBAGE = [
    b"this is not json",
    b'{"type": "teleport", "payload": {}}',
    b'{"type": "response", "payload": {"to": "someone"}}',
    b"[1, 2, 3]",
]


def garble() -> None:
    sys.stdout.buffer.write(b"\n".join(GARBAGE) + b"\n")
    sys.stdout.buffer.flush()


class Chatty(Agent):
    async def on_start(self, bridge):
        bridge.flush()
        garble()

    async def handle(self, message):
        if message.payload == "garble":
            self.bridge.flush()
            garble()
        return {"echo": message.payload}


run(Chatty("chatty"))

"""Asks another agent through the kernel while handling a message, and sends one on the side."""

import _path  # noqa: F401 — puts the test helpers on sys.path
from nexus_bridge import Agent, run


class Asker(Agent):
    async def handle(self, message):
        target = message.payload["ask"]
        reply = await self.bridge.ask(target, {"from_child": True}, timeout=10)
        self.bridge.send(target, "side note")
        return {"got": reply.payload}


run(Asker("asker", id="asker"))

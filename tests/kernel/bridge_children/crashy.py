"""Answers with its pid; dies (exit code 3, no goodbye) when told "crash"."""

import os

import _path  # noqa: F401 — puts the test helpers on sys.path
from nexus_bridge import Agent, run


class Crashy(Agent):
    async def handle(self, message):
        if message.payload == "crash":
            os._exit(3)
        return {"pid": os.getpid(), "echo": message.payload}


run(Crashy("crashy"))

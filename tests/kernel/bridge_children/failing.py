"""Its handler raises on "fail"; the bridge reports an error line and the child lives on."""

import _path  # noqa: F401 — puts the test helpers on sys.path
from nexus_bridge import Agent, run


class Failing(Agent):
    async def handle(self, message):
        if message.payload == "fail":
            raise ValueError("no can do")
        return {"ok": message.payload}


run(Failing("failing"))

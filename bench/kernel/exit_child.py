"""B6 exit-notice child: registers, and on any message writes its wall clock to stderr and dies."""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "bridges", "python"))
from nexus_bridge import Agent, run  # noqa: E402 — after the path setup that makes the import resolvable


class Dies(Agent):
    async def handle(self, message):
        sys.stderr.write(f"exit-at {time.time()!r}\n")
        sys.stderr.flush()
        os._exit(7)


run(Dies("dies"))

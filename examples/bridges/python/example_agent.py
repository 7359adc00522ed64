#!/usr/bin/env python3
"""Example Python agent for the Nexus kernel: a calculator.

Payloads it understands (any message kind):
  {"operation": "add" | "sub" | "mul" | "div", "a": 40, "b": 2}  -> {"result": 42}
  {"echo": anything}                                              -> {"echo": anything}
Anything else gets {"error": "..."} back. Run it under a kernel:

    from nexus.kernel.bridge import spawn_bridge
    agent_id = await spawn_bridge(kernel, [sys.executable, "examples/bridges/python/example_agent.py"])
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nexus_bridge import Agent, run

OPERATIONS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


class Calculator(Agent):
    async def handle(self, message):
        payload = message.payload if isinstance(message.payload, dict) else {}
        if "echo" in payload:
            return {"echo": payload["echo"]}
        operation = OPERATIONS.get(payload.get("operation"))
        if operation is None:
            return {"error": "unknown operation %r" % (payload.get("operation"),)}
        return {"result": operation(payload["a"], payload["b"]), "agent": self.name}


if __name__ == "__main__":
    run(Calculator("python-calculator"))

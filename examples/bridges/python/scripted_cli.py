#!/usr/bin/env python3
"""Example external coding CLI for a Nexus run, attached through the kernel bridge.

An agent whose document says `"llm": {"provider": "external", "command": [...]}` has a CLI
like this one as its brain (proto/bridge/README.md, "An external coding CLI as a run's
brain"). The runner sends one `start` Command; the CLI acts only by asking the hypervisor
agent named in it. This one follows a script instead of thinking, the way the scripted LLM
provider does — the shape is the same for an adapter in front of a real coding CLI.

    scripted_cli.py SCRIPT.json      (or the script's JSON text as the argument)

The script is a JSON list of steps, run in order:
  {"tool": NAME, "arguments": {...}}           ask the hypervisor (write_file, run_command, note, finish, ...)
  {"usage": {"input_tokens": N, "output_tokens": N, "cost_usd": X}}   report model spend
  {"shell": "LINE"}                            run a command ourselves, outside the hypervisor
  {"exit": CODE}                               exit at once (a crash, when CODE is not 0)
`{{task}}` in a string argument is replaced by the task text the runner sent. Every reply
from the hypervisor is printed to stderr (the runner logs it). After the last step the CLI
exits 0, unless a `finish` step made the runner ask it to shut down first.
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nexus_bridge import EVENT, Agent, run


def _fill(value, task):
    if isinstance(value, str):
        return value.replace("{{task}}", task)
    if isinstance(value, dict):
        return {k: _fill(v, task) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, task) for v in value]
    return value


def _load(arg):
    if os.path.isfile(arg):
        with open(arg, encoding="utf-8") as f:
            return json.load(f)
    return json.loads(arg)


class ScriptedCLI(Agent):
    def __init__(self, steps):
        super().__init__("scripted-cli")
        self.steps = steps

    async def handle(self, message):
        payload = message.payload if isinstance(message.payload, dict) else {}
        if payload.get("event") != "start":
            return None
        hypervisor, task = payload["hypervisor"], payload.get("task", "")
        for step in self.steps:
            if "exit" in step:
                self.bridge.flush()
                os._exit(int(step["exit"]))
            if "shell" in step:
                subprocess.run(step["shell"], shell=True, check=False)
            elif "usage" in step:
                self.bridge.send(hypervisor, dict(step["usage"], event="usage"), kind=EVENT)
            else:
                reply = await self.bridge.ask(
                    hypervisor,
                    {"tool": step["tool"], "arguments": _fill(step.get("arguments", {}), task)},
                    timeout=3600,
                )
                sys.stderr.write("%s -> %s\n" % (step["tool"], json.dumps(reply.payload)[:500]))
                if step["tool"] == "finish":
                    return None  # the runner stops us next
        self.bridge.flush()
        os._exit(0)  # done without finish: a CLI that simply ends


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: scripted_cli.py SCRIPT.json | 'JSON'")
    run(ScriptedCLI(_load(sys.argv[1])))

"""Registers, starts a long-lived grandchild (argv[1] is its exact command line), then obeys shutdown."""

import subprocess
import sys

import _path  # noqa: F401 — puts the test helpers on sys.path

from nexus_bridge import Agent, run

subprocess.Popen(sys.argv[1], shell=True)  # left running on purpose: the group kill must reach it


class Idle(Agent):
    async def handle(self, message):
        return None


run(Idle("spawner"))

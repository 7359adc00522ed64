"""The run's NATS credential and secrets sit in the runner's environment (`NEXUS_NATS_CREDS`,
`NEXUS_SECRET_*`, given by the worker). A command that can run an interpreter reads /proc/<pid>/environ
of every process it may trace: bwrap hides the runner (a PID namespace and /proc of its own) and Landlock
hides /proc (`test_commands_hostile.py`); the `none` mode has neither. There a root runner's command has
given up every capability, and the kernel lets no process read the environment of one holding
capabilities it lacks. (A runner that is not root has none to hold: its `none` mode's commands read it.)"""

import pytest

from tests.agent_runner.hostile.test_commands_hostile import VALUE, Stage, _probe, _run
from tests.agent_runner.test_runner_support import js  # noqa: F401 — a fixture, used as a parameter


@pytest.mark.infra
async def test_a_command_without_a_sandbox_cannot_read_the_runners_environment(js, nats_url, tmp_path) -> None:
    stage = Stage(tmp_path)
    calls = [{"name": "run_command", "args": {"cmd": "python3 scripts/probe.py environ"}}]
    r, _ = await _run(stage, js, nats_url, calls, env={"NEXUS_SANDBOX": "none"})
    runner = next((line for line in _probe(r, "environ").splitlines() if line.startswith(f"{r.proc.pid}: ")), "")
    assert runner == f"{r.proc.pid}: unreadable (PermissionError)", runner
    assert VALUE not in _probe(r, "environ")

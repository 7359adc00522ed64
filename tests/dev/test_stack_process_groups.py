"""A service of the local stack that dies leaves nothing behind: what it had forked (core-api's granian
worker, which kept serving :8080 and its ops port after its parent was killed, answering 500s beside the
restarted core-api and outliving `make run` itself) goes with it, on a restart and on the stop."""

import io
import os
import signal
import time
from pathlib import Path

import pytest

from nexus.dev import stack as stack_module
from nexus.dev.stack import Stack
from nexus.dev.supervisor import Supervisor

# A service that forks a child, as granian does for its worker, and says where the child is.
FORKER = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(os.environ["CHILD_PID_FILE"], "a") as f:
    f.write(f"{child.pid}\\n")
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not yet reaped
    except FileNotFoundError:
        return False


def _wait_for(predicate, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout_s}s")
        time.sleep(0.05)


def _children(pid_file: Path, count: int) -> list[int]:
    _wait_for(lambda: pid_file.exists() and len(pid_file.read_text().split()) >= count, f"{count} children forked")
    return [int(p) for p in pid_file.read_text().split()]


@pytest.fixture
def forking_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "forker.py").write_text(FORKER)
    monkeypatch.setitem(stack_module.SERVICES, "forker", "forker")
    stack = Stack(home=tmp_path / "nexus", nats_url="nats://unused", mongodb_url="mongodb://unused")
    stack.metrics_ports["forker"] = 0
    stack.env.update(PYTHONPATH=str(tmp_path), CHILD_PID_FILE=str(tmp_path / "children"))
    yield stack, tmp_path / "children"
    stack.stop()


def test_a_killed_service_is_restarted_without_what_it_had_forked(forking_stack) -> None:
    stack, pid_file = forking_stack
    first = stack.start_service("forker")
    supervisor = stack.supervise(Supervisor(base_backoff_s=0.0, out=io.StringIO()))
    [orphan] = _children(pid_file, 1)
    os.kill(first.pid, signal.SIGKILL)  # the parent alone, as `kill -9 <core-api pid>`
    first.wait()
    _wait_for(lambda: supervisor.check() == ["forker"], "restarted")
    _wait_for(lambda: not _alive(orphan), "the dead service's child gone")
    [_, child] = _children(pid_file, 2)
    assert _alive(child)  # the new instance's own child is left alone
    stack.stop()
    _wait_for(lambda: not _alive(child), "the child gone with the stack")


def test_the_stack_stops_what_a_dead_service_left_behind(forking_stack) -> None:
    stack, pid_file = forking_stack
    proc = stack.start_service("forker")
    [orphan] = _children(pid_file, 1)
    os.kill(proc.pid, signal.SIGKILL)  # dead, and not restarted yet when Ctrl-C comes
    proc.wait()
    stack.stop()
    _wait_for(lambda: not _alive(orphan), "the orphan gone with the stack")

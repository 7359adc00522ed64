"""`make run` stops what it started and keeps its data to itself. A terminal that closes (or an ssh session
that drops) sends SIGHUP, which stops everything it started as Ctrl-C does: it used to die at once and leave
every service, nats-server, FerretDB and its PostgreSQL running on their ports, for the next `make run` to
find them there."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nexus.dev.servers import free_port

pytestmark = pytest.mark.infra


def _descendants(root: int) -> dict[int, str]:
    """Every process under `root`, by pid, with its start time (so a pid given to another process later
    is not taken for it)."""
    parents: dict[int, int] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            started[int(entry.name)] = fields[19]
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = started[pid]
                frontier.append(pid)
    return found


def _alive(pid: int, started: str) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == started and fields[0] != "Z"


def test_a_hangup_stops_every_process_make_run_started(tmp_path: Path) -> None:
    log = tmp_path / "make-run.log"
    with open(log, "wb") as out:
        dev = subprocess.Popen(
            [sys.executable, "-c", "from nexus.dev.stack import main; main()", "run", "--home", str(tmp_path / "home")]
            + ["--port", str(free_port())],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 180
        while b"Nexus is up" not in log.read_bytes():
            assert dev.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        started = _descendants(dev.pid)
        assert len(started) >= 6, started  # four services, nats-server, FerretDB (and PostgreSQL's)
        os.kill(dev.pid, signal.SIGHUP)
        dev.wait(120)
        deadline = time.monotonic() + 30
        while (left := [pid for pid, at in started.items() if _alive(pid, at)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"left running after the hangup: {left}"
    finally:
        for pid, at in started.items():
            if _alive(pid, at):
                os.kill(pid, signal.SIGKILL)
        if dev.poll() is None:
            dev.kill()
            dev.wait()


def test_a_second_make_run_on_the_same_data_says_so_and_starts_nothing(tmp_path: Path) -> None:
    """It used to start a second nats-server on the first one's JetStream store and end in a traceback."""
    from nexus.dev.stack import hold_home

    home = tmp_path / "home"
    first = hold_home(home)  # as a running `make run` holds it
    try:
        second = subprocess.run(
            [sys.executable, "-c", "from nexus.dev.stack import main; main()", "run", "--home", str(home)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        first.close()
    assert second.returncode != 0
    assert f"Nexus is already running on {home} (pid {os.getpid()})" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr + second.stdout
    assert not (home / "nats").exists() and not (home / "logs").exists()  # nothing was started
    hold_home(home).close()  # free again once the first is gone: no stale lock

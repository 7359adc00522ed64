"""What a run's directory says of its runner: its pid, when that process started (with the pid it names one
process for good) and the attempt it runs, in one small file, `runner.json`.

One file, not three: on the ext4 this box runs (no journal) creating an inode scans every inode freed in the
last minute, and the worker's launch was half inode creation. Directories an older worker wrote hold the
same facts in `runner.pid`, `runner.started` and `attempt`; they are still read, so a worker of this version
adopts the runners an older one left."""

import json
from pathlib import Path
from typing import NamedTuple

from nexus.worker.runtimes.files import write_file

RECORD = "runner.json"


class RunnerRecord(NamedTuple):
    pid: int
    started: int  # clock ticks since boot (/proc/<pid>/stat); 0 when the runner was gone before it was read
    attempt: int


def write_record(run_dir: Path, record: RunnerRecord) -> None:
    # Truncated, then written: a reader in between finds no runner, as it found none before the pid was written.
    write_file(run_dir / RECORD, json.dumps(record._asdict()).encode())


def read_record(run_dir: Path) -> RunnerRecord | None:
    """The runner `run_dir` names; None when there is none (yet), or it cannot be read."""
    try:
        data = json.loads((run_dir / RECORD).read_bytes())
        return RunnerRecord(int(data["pid"]), int(data["started"]), int(data["attempt"]))
    except FileNotFoundError:
        return _read_older(run_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_older(run_dir: Path) -> RunnerRecord | None:
    """The three files a worker before `runner.json` wrote. A missing `attempt` file (a launch cut short
    between its writes) matches no attempt: attempt 0."""
    try:
        pid = int((run_dir / "runner.pid").read_text())
        started = int((run_dir / "runner.started").read_text())
    except (OSError, ValueError):
        return None
    try:
        attempt = int((run_dir / "attempt").read_text())
    except (OSError, ValueError):
        attempt = 0
    return RunnerRecord(pid, started, attempt)

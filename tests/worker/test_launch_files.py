"""The small files a launch writes: exactly the bytes given, an older file's longer content cut, the mode
asked for (less the umask) on a new file; the run's directory is new only the first time; what one launch
creates, and nothing more."""

import os
from pathlib import Path

from nexus.worker.runtimes.base import RunRequest
from nexus.worker.runtimes.files import write_file
from nexus.worker.runtimes.local import LocalProcessRuntime, _made, process_start
from nexus.worker.runtimes.record import RunnerRecord, read_record
from tests.worker.conftest import trivial_config


def test_a_file_holds_exactly_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "runner.pid"
    write_file(path, b"123456")
    write_file(path, b"42")  # a shorter value replaces it whole
    assert path.read_bytes() == b"42"
    big = os.urandom(1 << 20)
    write_file(path, big)
    assert path.read_bytes() == big


def test_a_new_file_gets_the_mode_asked_for(tmp_path: Path) -> None:
    secret = tmp_path / "runner.env"
    write_file(secret, b"{}", 0o600)
    assert secret.stat().st_mode & 0o777 == 0o600


def test_a_directory_is_new_only_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "missing-root" / "run_1"
    assert _made(run_dir)  # its parent was missing too
    assert not _made(run_dir)
    assert run_dir.is_dir()


async def test_a_launch_makes_four_entries_and_its_runners_home_is_its_attempt_directory(tmp_path: Path) -> None:
    """What the worker creates per launch, on top of what the runner makes itself: the run's directory, the
    attempt's, the run's config and one record of the runner (its pid, start and attempt). On the ext4 this
    box runs, each new inode costs the worker more than the Python around it (docs/throughput.md)."""
    runtime = LocalProcessRuntime(tmp_path, parent_env={}, kill_grace_s=0.2, runner_cmd=["sleep", "30"])
    handle = await runtime.start_run(RunRequest(run_id="r-files", attempt=1, config=trivial_config("r-files")))
    try:
        made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
        # runner.log is the cold runner's stdout (opened by the worker for it; a forked runner opens its own)
        assert made == [  # its control files; on disk, as without a tmpfs (test_run_files: in memory)
            ".run-files",
            ".run-files/r-files",
            ".run-files/r-files/attempt-1",
            ".run-files/r-files/attempt-1/run-config.json",
            ".run-files/r-files/attempt-1/runner.log",
            ".run-files/r-files/runner.json",
        ]
        environ = dict(
            entry.split("=", 1) for entry in Path(f"/proc/{handle.ref}/environ").read_text().split("\0") if entry
        )
        assert environ["HOME"] == str(runtime.run_dir("r-files") / "attempt-1")
        assert read_record(runtime.run_dir("r-files")) == RunnerRecord(
            int(handle.ref), process_start(int(handle.ref)), 1
        )
        assert (await runtime.status("r-files")).phase == "running"
    finally:
        await runtime.cleanup("r-files")
    assert (await runtime.status("r-files")).phase == "missing"

"""A runner's pid names it only while it lives: the kernel gives the number to a new process later
(32,768 pids by default, several spent per run), and the local runtime must never take that process
for the run's runner — not to list it, report it running, or signal its process group."""

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from nexus.worker.runtimes.base import RunRequest
from nexus.worker.runtimes.local import LocalProcessRuntime, pid_alive, process_start
from tests.worker.conftest import trivial_config


@pytest.fixture
def stranger():
    """A process that is not a runner, in a session of its own (as a reused pid's owner could be)."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def _leave_behind(runtime: LocalProcessRuntime, run_id: str, pid: int, started: int | None) -> Path:
    d = runtime.run_dir(run_id)
    d.mkdir(parents=True)
    (d / "runner.pid").write_text(str(pid))
    if started is not None:
        (d / "runner.started").write_text(str(started))
    (d / "attempt").write_text("1")
    return d


async def test_a_reused_pid_is_not_the_runner(tmp_path, stranger) -> None:
    runtime = LocalProcessRuntime(tmp_path, parent_env={}, kill_grace_s=0.2)
    start = process_start(stranger.pid)
    assert start is not None
    # An ended run's runner had this pid once, and started earlier than the process that has it now.
    _leave_behind(runtime, "r-ended", stranger.pid, start - 1)
    _leave_behind(runtime, "r-older", stranger.pid, None)  # written before starts were recorded

    assert await runtime.list_runs() == []
    assert (await runtime.status("r-ended")).phase == "missing"
    await runtime.cancel_run("r-ended")
    await runtime.cleanup("r-older")
    assert await runtime.wait("r-ended") is None
    assert stranger.poll() is None and pid_alive(stranger.pid)  # nobody signalled it


async def test_the_recorded_runner_is_found_and_stopped(tmp_path, stranger) -> None:
    runtime = LocalProcessRuntime(tmp_path, parent_env={}, kill_grace_s=0.2)
    d = runtime.run_dir("r-live")
    d.mkdir(parents=True)
    runtime._record(d, stranger.pid, 1)

    assert await runtime.list_runs() == ["r-live"]
    assert (await runtime.status("r-live")).phase == "running"
    await runtime.cancel_run("r-live")
    assert await asyncio.to_thread(stranger.wait, 5) == -signal.SIGTERM
    assert await runtime.list_runs() == []


async def test_a_runner_an_older_worker_recorded_in_three_files_is_found_not_launched_again(tmp_path, stranger) -> None:
    """Workers before `runner.json` wrote `runner.pid`, `runner.started` and `attempt`: a worker of this version
    still finds such a runner (to adopt, sweep and stop it), and never starts the same attempt beside it."""
    runtime = LocalProcessRuntime(tmp_path, parent_env={}, kill_grace_s=0.2, runner_cmd=["sleep", "30"])
    _leave_behind(runtime, "r-older-live", stranger.pid, process_start(stranger.pid))

    assert await runtime.list_runs() == ["r-older-live"]
    handle = await runtime.start_run(
        RunRequest(run_id="r-older-live", attempt=1, config=trivial_config("r-older-live"))
    )
    assert handle.ref == str(stranger.pid)
    assert not (runtime.run_dir("r-older-live") / "attempt-1").exists()  # nothing launched beside it
    assert (await runtime.status("r-older-live")).phase == "running"
    await runtime.cancel_run("r-older-live")
    assert await asyncio.to_thread(stranger.wait, 5) == -signal.SIGTERM


async def test_sweeps_read_the_directories_of_ended_runs_once(tmp_path, stranger, monkeypatch) -> None:
    """Run directories stay on disk after their runs end. The first listing reads every one (it finds the
    runners an earlier worker left); later ones read only the runs found alive and those started since, so
    a worker at rest does not cost more with every run it ever held."""
    runtime = LocalProcessRuntime(tmp_path, parent_env={}, kill_grace_s=0.2, runner_cmd=["sleep", "30"])
    for i in range(40):
        _leave_behind(runtime, f"r-ended-{i}", stranger.pid, 1)  # ended long ago: the pid is someone else's now
    d = runtime.run_dir("r-live")
    d.mkdir(parents=True)
    runtime._record(d, stranger.pid, 1)
    read: list[str] = []
    real_pid = runtime._pid

    def counting(run_id: str) -> int | None:
        read.append(run_id)
        return real_pid(run_id)

    monkeypatch.setattr(runtime, "_pid", counting)
    assert await runtime.list_runs() == ["r-live"]
    assert len(read) == 41
    read.clear()
    assert await runtime.list_runs() == ["r-live"]
    assert read == ["r-live"]
    # A runner started since is listed; one that ended is dropped for good.
    handle = await runtime.start_run(RunRequest(run_id="r-new", attempt=1, config=trivial_config("r-new")))
    try:
        assert sorted(await runtime.list_runs()) == ["r-live", "r-new"]
        await runtime.cancel_run("r-live")
        assert await runtime.list_runs() == ["r-new"]
        read.clear()
        assert await runtime.list_runs() == ["r-new"] and read == ["r-new"]
    finally:
        await runtime.cleanup(handle.run_id)

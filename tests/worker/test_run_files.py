"""Where a run's files go: its control files (record, environment, config, log) under the run files root,
in memory when the machine has a tmpfs; what the agent and git write on disk under `workspaces_dir`, in as
few directories as the runner needs. A launch creates nothing on the disk root but those; a root in
/dev/shm that is not this user's own is refused; runners an older worker recorded beside the workspaces
are still found and stopped."""

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nexus.db.documents import Run
from nexus.worker.runtimes.base import RunRequest
from nexus.worker.runtimes.local import LocalProcessRuntime
from nexus.worker.runtimes.run_files import LINK, memory_backed, memory_root, run_files_root
from tests.worker.conftest import QUICK, make_run, trivial_config
from tests.worker.test_zygote import ready_worker

SHM = Path("/dev/shm")
needs_tmpfs = pytest.mark.skipif(not (SHM.is_dir() and memory_backed(SHM)), reason="no tmpfs at /dev/shm")


@pytest.fixture
def shm() -> Iterator[Path]:
    """A directory of this test's own on the machine's tmpfs, removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="nexus-test-", dir=SHM))
    d.chmod(0o755)  # anyone may pass through it, as through /dev/shm
    yield d
    shutil.rmtree(d, ignore_errors=True)


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@needs_tmpfs
def test_the_memory_root_is_this_users_own_and_private(tmp_path: Path, shm: Path) -> None:
    root = memory_root(tmp_path / "runs", shm=shm)
    assert root is not None and memory_backed(root)
    for d in (root, root.parent):
        assert d.stat().st_mode & 0o777 == 0o700 and d.stat().st_uid == os.geteuid()
    assert memory_root(tmp_path / "other", shm=shm) != root  # one per data directory
    assert memory_root(tmp_path / "runs", shm=shm) == root  # the same again after a restart
    assert memory_root(tmp_path / "runs", shm=tmp_path) is None  # not a tmpfs: none


@needs_tmpfs
def test_a_root_someone_else_put_in_shm_is_refused(tmp_path: Path, shm: Path) -> None:
    """/dev/shm is everyone's: a link (or a directory of another user's) where the worker's directory goes
    would hand the runs' environments to whoever made it."""
    (shm / f"nexus-{os.geteuid()}").symlink_to(tmp_path)
    assert memory_root(tmp_path / "runs", shm=shm) is None
    assert not list(tmp_path.iterdir())
    if os.geteuid() == 0:
        (shm / f"nexus-{os.geteuid()}").unlink()
        (shm / f"nexus-{os.geteuid()}").mkdir(mode=0o700)
        os.chown(shm / f"nexus-{os.geteuid()}", 4242, 4242)
        assert memory_root(tmp_path / "runs", shm=shm) is None


def test_without_tmpfs_the_control_files_stay_on_disk_where_the_link_would_be(tmp_path: Path) -> None:
    root = run_files_root(tmp_path / "runs", str(tmp_path / "runs" / LINK))
    assert root == tmp_path / "runs" / LINK and root.is_dir() and not root.is_symlink()
    # A later start keeps that directory (its runners are found there) until a setting says otherwise.
    assert run_files_root(tmp_path / "runs") == root


@needs_tmpfs
async def test_a_launch_creates_nothing_on_the_disk_root(tmp_path: Path, shm: Path) -> None:
    """Every control file of the launch is in memory; the disk root holds only the link made once, at start.
    (Before: the run's and the attempt's directories, the config and the record, each 23–265 µs on this box.)"""
    disk = tmp_path / "runs"
    runtime = LocalProcessRuntime(disk, parent_env={}, kill_grace_s=0.2, runner_cmd=["sleep", "30"], run_files=str(shm))
    assert (disk / LINK).resolve() == shm
    before = tree(disk)
    handle = await runtime.start_run(RunRequest(run_id="r-files", attempt=1, config=trivial_config("r-files")))
    try:
        assert tree(disk) == before == [LINK]
        assert tree(shm) == [
            "r-files",
            "r-files/attempt-1",
            "r-files/attempt-1/run-config.json",
            "r-files/attempt-1/runner.log",  # the cold runner's stdout, opened by the worker for it
            "r-files/runner.json",
        ]
        environ = dict(
            entry.split("=", 1) for entry in Path(f"/proc/{handle.ref}/environ").read_text().split("\0") if entry
        )
        # What the agent and git write goes to disk; the runner's HOME (where it writes nothing) is in memory.
        assert environ["NEXUS_STATE_DIR"] == str(disk / "r-files.1")
        assert environ["NEXUS_WORKSPACE"] == str(disk / "r-files.1" / "workspace")
        assert environ["HOME"] == str(shm / "r-files" / "attempt-1")
        assert (await runtime.status("r-files")).phase == "running"
        assert await runtime.list_runs() == ["r-files"]
    finally:
        await runtime.cleanup("r-files")
    assert (await runtime.status("r-files")).phase == "missing"


async def test_a_runner_an_older_worker_recorded_beside_the_workspaces_is_found_and_stopped(
    tmp_path: Path,
) -> None:
    """A worker before the run files root kept `<workspaces_dir>/<run_id>/runner.json`: a worker of this
    version adopts that runner, launches nothing beside it, and stops it."""
    disk = tmp_path / "runs"
    runner = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (disk / "r-old").mkdir(parents=True)
        LocalProcessRuntime(disk, parent_env={})._record(disk / "r-old", runner.pid, 1)
        runtime = LocalProcessRuntime(disk, parent_env={}, kill_grace_s=0.2, runner_cmd=["sleep", "30"])
        assert await runtime.list_runs() == ["r-old"]
        assert (await runtime.status("r-old")).phase == "running"
        handle = await runtime.start_run(RunRequest(run_id="r-old", attempt=1, config=trivial_config("r-old")))
        assert handle.ref == str(runner.pid)  # the one running, not a second
        await runtime.cancel_run("r-old")
        assert runner.wait(5) is not None
    finally:
        runner.kill()
        runner.wait()


@pytest.mark.infra
async def test_a_forked_run_leaves_on_disk_only_its_state_and_workspace(workers, bus) -> None:
    """A real worker, zygote and runner: the trivial run's control files (the record, the claimed
    environment holding the config, the runner's log) are in memory, and on the disk root the run made its
    state directory, its workspace and the session's state, nothing else."""
    await ready_worker(workers, bus)
    disk = workers.tmp / "w1" / "runs"
    memory = (disk / LINK).resolve()
    if memory_backed(SHM):
        assert memory.is_relative_to(SHM)
    run = await make_run(QUICK)
    await bus.launch(run)
    await bus.until(lambda: bus.runtime(run.id, "exited"))
    logs = "".join(p.read_text(errors="replace") for p in memory.glob("*/*/runner.log"))
    assert bus.statuses(run.id) == ["running", "succeeded"], logs
    pid = int(bus.runtime(run.id, "launched")[0]["detail"])
    session = (await Run.get(run.id)).session_id
    assert tree(disk) == sorted(
        [LINK, f"{run.id}.1", f"{run.id}.1/workspace", f"{run.id}.1/workspace/a.txt", f"{run.id}.1/{session}.json"]
    )
    assert tree(memory / run.id) == [
        "attempt-1",
        "attempt-1/runner.env." + str(pid),
        "attempt-1/runner.log",
        "runner.json",
    ]
    assert json.loads((memory / run.id / "runner.json").read_text())["pid"] == pid


@needs_tmpfs
@pytest.mark.skipif(os.geteuid() != 0, reason="runs as another user only when the worker is root")
async def test_a_run_as_another_user_reaches_its_files_in_memory_and_writes_on_disk(shm: Path) -> None:
    """The memory root is the worker's (0710, the runs' group may pass through it): the run's user reads
    its config there and makes its workspace in the state directory the worker made it on disk."""
    nobody = 65534
    disk = Path(tempfile.mkdtemp(prefix="nexus-test-", dir="/tmp"))
    disk.chmod(0o755)
    script = 'cat "$NEXUS_RUN_CONFIG" > "$NEXUS_STATE_DIR/config" && mkdir "$NEXUS_WORKSPACE" && exec sleep 30'
    try:
        root = memory_root(disk / "runs", nobody, shm=shm)
        assert root is not None and root.stat().st_mode & 0o777 == 0o710 and root.stat().st_gid == nobody
        runtime = LocalProcessRuntime(
            disk / "runs",
            parent_env={},
            kill_grace_s=0.2,
            runner_cmd=["sh", "-c", script],
            run_uid=nobody,
            run_files=str(root),
        )
        await runtime.start_run(RunRequest(run_id="r-nobody", attempt=1, config=trivial_config("r-nobody")))
        state = disk / "runs" / "r-nobody.1"
        for _ in range(100):
            if (state / "workspace").exists():
                break
            await asyncio.sleep(0.05)
        assert (state / "workspace").stat().st_uid == nobody
        assert b'"run_id":"r-nobody"' in (state / "config").read_bytes()
        await runtime.cleanup("r-nobody")
    finally:
        shutil.rmtree(disk, ignore_errors=True)

"""The local runtime removes what ended runs left on the machine — their control files, their state
directories and workspaces on disk — once they are older than the retention, a batch at a time, never a
run whose runner lives or that is being launched; the worker's sweep does it."""

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nexus.worker.runtimes.base import RunRequest
from nexus.worker.runtimes.local import LocalProcessRuntime
from nexus.worker.runtimes.run_files import LINK
from tests.worker.conftest import QUICK, make_run, trivial_config
from tests.worker.test_zygote import ready_worker

DAY = 86400


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[tuple[LocalProcessRuntime, Path]]:
    shm = Path(tempfile.mkdtemp(prefix="nexus-test-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    runtime = LocalProcessRuntime(
        tmp_path / "runs", parent_env={}, kill_grace_s=0.2, runner_cmd=["sleep", "30"], run_files=str(shm)
    )
    yield runtime, shm
    shutil.rmtree(shm, ignore_errors=True)


def age(*paths: Path, days: float = 2) -> None:
    for path in paths:
        for p in [path, *path.rglob("*")]:
            os.utime(p, (time.time() - days * DAY,) * 2)


async def launched(runtime: LocalProcessRuntime, run_id: str) -> Path:
    """The run's state directory on disk (made as the runner would: the worker leaves it to the runner)."""
    await runtime.start_run(RunRequest(run_id=run_id, attempt=1, config=trivial_config(run_id)))
    state = runtime.state_dir(run_id, 1)
    (state / "workspace").mkdir(parents=True)
    (state / "workspace" / "big.bin").write_bytes(b"x" * 4096)
    return state


async def test_ended_runs_older_than_the_retention_go_and_nothing_else(runs) -> None:
    runtime, memory = runs
    ended = await launched(runtime, "r-ended")
    live = await launched(runtime, "r-live")
    recent = await launched(runtime, "r-recent")
    for run_id in ("r-ended", "r-recent"):
        await runtime.cancel_run(run_id)  # its runner ends (stopped here; exited on its own alike)
        assert await runtime.wait(run_id) is not None
    lost = runtime.state_dir("r-lost", 2)  # its control files went with a reboot's tmpfs
    (lost / "workspace").mkdir(parents=True)
    age(ended, live, lost, runtime.run_dir("r-ended"), runtime.run_dir("r-live"))
    try:
        assert await runtime.prune(DAY, batch=100) == 3
        assert not runtime.run_dir("r-ended").exists() and not ended.exists() and not lost.exists()
        # A live runner's files stay, however old; an ended run's stay until the retention has passed.
        assert (runtime.run_dir("r-live") / "runner.json").exists() and (live / "workspace" / "big.bin").exists()
        assert runtime.run_dir("r-recent").exists() and recent.exists()
        assert sorted(os.listdir(runtime.root)) == sorted([LINK, "r-live.1", "r-recent.1"])
        assert sorted(os.listdir(memory)) == ["r-live", "r-recent"]
        assert (await runtime.status("r-live")).phase == "running"
    finally:
        await runtime.cleanup("r-live")


async def test_a_batch_at_a_time(runs) -> None:
    runtime, memory = runs
    for n in range(5):
        (runtime.state_dir(f"r-{n}", 1) / "workspace").mkdir(parents=True)
        age(runtime.state_dir(f"r-{n}", 1))
    assert [await runtime.prune(DAY, batch=2) for _ in range(4)] == [2, 2, 1, 0]
    assert os.listdir(runtime.root) == [LINK]


async def test_a_run_being_launched_is_not_pruned(runs) -> None:
    """Its state directory is ownerless until its record is written: the launch in flight protects it."""
    runtime, _ = runs
    old = runtime.state_dir("r-again", 1)
    (old / "workspace").mkdir(parents=True)
    age(old)
    runtime._starting.add("r-again")
    assert await runtime.prune(DAY, batch=10) == 0
    runtime._starting.discard("r-again")
    assert await runtime.prune(DAY, batch=10) == 1


@pytest.mark.infra
async def test_the_worker_sweep_removes_an_ended_runs_files(workers, bus) -> None:
    await ready_worker(workers, bus, run_retention_s=1)
    disk = workers.tmp / "w1" / "runs"
    run = await make_run(QUICK)
    await bus.launch(run)
    await bus.until(lambda: bus.runtime(run.id, "exited"))
    assert bus.statuses(run.id) == ["running", "succeeded"]
    # Two sweeps apart (5 s each): the first may come within the retention of the run's last sign; the poll's
    # bound leaves room for a loaded box's slow sweeps (it once ran out at 100 polls in a shared-box suite).
    await bus.until(lambda: not (disk / LINK / run.id).exists() and not (disk / f"{run.id}.1").exists(), tries=600)
    assert sorted(os.listdir(disk)) == [LINK]

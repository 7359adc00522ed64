"""Runs forked from the worker's warm zygote, with real worker, zygote and runner processes: they
succeed; killing the zygote mid-burst loses nothing and launches nothing twice (runs fall back
cold, the zygote comes back); a forked runner killed mid-run is reported as the exit it was; a
worker killed under forked runners leaves them to be adopted like cold ones."""

import os
import re
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nexus.db.documents import Run
from tests.worker.conftest import QUICK, make_run, sleepy

pytestmark = pytest.mark.infra
ZYGOTE_READY = re.compile(r"runner zygote (\d+) ready")


def zygotes(log: Path) -> list[int]:
    return [int(pid) for pid in ZYGOTE_READY.findall(log.read_text(errors="replace"))]


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def limits(pid: int) -> dict[str, str]:
    rows = Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
    return {row[:26].strip(): row[26:47].strip() for row in rows}


async def ready_worker(workers, bus, name: str = "w1", **settings) -> tuple[int, Path]:
    workers.start(name, **settings)
    log = workers.procs[-1][1]
    await bus.until(lambda: zygotes(log))
    return zygotes(log)[-1], log


async def test_runs_are_forked_from_the_zygote_in_the_runs_limits(workers, bus) -> None:
    zygote, _ = await ready_worker(workers, bus, run_open_files=333, run_memory_mb=1536)
    held = await make_run(sleepy(30))
    quick = [await make_run(QUICK) for _ in range(4)]
    for run in [held, *quick]:
        await bus.launch(run)
    await bus.until(lambda: bus.of(held.id, "run.llm"))
    pid = int(bus.runtime(held.id, "launched")[0]["detail"])
    assert parent(pid) == zygote  # forked, not exec'd by the worker
    assert os.getpgid(pid) == pid and os.getsid(pid) == pid
    got = limits(pid)
    assert got["Max open files"] == "333" and got["Max address space"] == str(1536 << 20)
    await bus.until(lambda: all(bus.runtime(r.id, "exited") for r in quick))
    for run in quick:
        assert bus.statuses(run.id) == ["running", "succeeded"], run.id
        assert bus.runtime(run.id, "exited")[0]["exit_code"] == 0
    await bus.cancel(held.id)
    await bus.until(lambda: bus.runtime(held.id, "exited"))
    assert bus.statuses(held.id)[-1] == "cancelled"


async def test_killing_the_zygote_mid_burst_loses_nothing(workers, bus) -> None:
    zygote, log = await ready_worker(workers, bus)
    runs = [await make_run(QUICK) for _ in range(16)]
    for run in runs:
        await bus.launch(run)
    await bus.until(lambda: sum(1 for r in runs if bus.runtime(r.id, "launched")) >= 3)
    os.kill(zygote, signal.SIGKILL)
    await bus.until(lambda: all(bus.runtime(r.id, "exited") for r in runs), tries=900)
    for run in runs:
        assert len(bus.runtime(run.id, "launched")) == 1, run.id
        assert bus.statuses(run.id) == ["running", "succeeded"], run.id
    await bus.until(lambda: len(zygotes(log)) >= 2)  # the worker brought a new zygote up
    assert zygotes(log)[-1] != zygote
    after = await make_run(sleepy(30))
    await bus.launch(after)
    await bus.until(lambda: bus.of(after.id, "run.llm"))
    assert parent(int(bus.runtime(after.id, "launched")[0]["detail"])) == zygotes(log)[-1]
    await bus.cancel(after.id)
    await bus.until(lambda: bus.runtime(after.id, "exited"))


async def test_a_forked_runner_killed_mid_run_is_reported_as_killed(workers, bus) -> None:
    zygote, _ = await ready_worker(workers, bus)
    run = await make_run(sleepy(30))
    await bus.launch(run)
    await bus.until(lambda: bus.of(run.id, "run.llm"))
    pid = int(bus.runtime(run.id, "launched")[0]["detail"])
    assert parent(pid) == zygote
    os.killpg(pid, signal.SIGKILL)
    await bus.until(lambda: bus.runtime(run.id, "exited"))
    assert bus.runtime(run.id, "exited")[0]["exit_code"] == -signal.SIGKILL
    assert bus.statuses(run.id) == ["running"]  # it never reported an end: core-api fails (and retries) the attempt


async def test_a_killed_worker_leaves_forked_runners_to_be_adopted(workers, bus) -> None:
    zygote, _ = await ready_worker(workers, bus, heartbeat_timeout_s=2)
    runs = [await make_run(sleepy(15)) for _ in range(3)]
    for run in runs:
        await bus.launch(run)
    await bus.until(lambda: all(bus.of(r.id, "run.llm") for r in runs))
    for run in runs:  # core-api's view, which the worker reads: running since now
        await Run.get_pymongo_collection().update_one(
            {"_id": run.id},
            {
                "$set": {
                    "status": "running",
                    "started_at": datetime.now(UTC),
                    "attempts": [{"n": 1, "started_at": datetime.now(UTC)}],
                }
            },
        )
    pids = [int(bus.runtime(r.id, "launched")[0]["detail"]) for r in runs]
    assert all(parent(pid) == zygote for pid in pids)
    first = workers.procs[-1][0]
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its zygote; the runners are in sessions of their own
    first.wait()
    _, log = await ready_worker(workers, bus, "w1", heartbeat_timeout_s=2)  # again, over the same workspaces
    await bus.until(lambda: all(bus.runtime(r.id, "exited") for r in runs), tries=900)
    for run in runs:
        assert bus.statuses(run.id) == ["running", "succeeded"], run.id
        assert len(bus.runtime(run.id, "launched")) == 1 and len(bus.runtime(run.id, "exited")) == 1, run.id
        assert f"adopting run {run.id}" in log.read_text()

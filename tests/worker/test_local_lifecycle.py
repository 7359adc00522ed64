"""The local runtime's whole lifecycle with real processes: launch, events, success, failure,
cancel, timeout (the runner's own and the worker's deadline for a hung runner), lost."""

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from nats.js.api import KeyValueConfig

from nexus.db.documents import Run
from nexus.worker.launcher import LAUNCH_BUCKET, claim_key
from nexus.worker.runtimes.local import process_groups
from tests.worker.conftest import QUICK, group_gone, make_run, sleepy

pytestmark = pytest.mark.infra


async def test_success_reports_launch_events_and_exit(workers, bus) -> None:
    workers.start()
    run = await make_run(QUICK)
    await bus.launch(run)
    await bus.until(lambda: bus.runtime(run.id, "exited"))
    (launched,) = bus.runtime(run.id, "launched")
    assert launched["attempt"] == 1 and launched["runtime"] == "local" and int(launched["detail"]) > 0
    assert bus.statuses(run.id) == ["running", "succeeded"]
    assert bus.of(run.id, "run.file_write") and bus.of(run.id, "run.llm")
    assert bus.runtime(run.id, "exited")[0]["exit_code"] == 0
    kinds = [t for rid, t, _, _ in bus.events if rid == run.id]
    assert kinds[0] == "run.runtime" and kinds[-1] == "run.runtime"  # launched first, exited last
    assert group_gone(int(launched["detail"]))


async def test_a_run_that_outlasts_the_heartbeat_interval_beats(workers, bus) -> None:
    workers.start()  # runners beat every 0.5 s here
    run = await make_run(sleepy(2))
    await bus.launch(run)
    await bus.until(lambda: bus.runtime(run.id, "exited"))
    assert bus.statuses(run.id) == ["running", "succeeded"]
    kinds = [t for rid, t, _, _ in bus.events if rid == run.id]
    assert "run.heartbeat" in kinds
    assert kinds.index("run.heartbeat") > kinds.index("run.status")  # "running" first, the beats after an interval


async def test_failure_is_reported_with_its_reason_and_exit_code(workers, bus) -> None:
    workers.start()
    run = await make_run("steps: [1")  # not YAML: the scripted provider refuses it
    await bus.launch(run)
    await bus.until(lambda: bus.runtime(run.id, "exited"))
    final = bus.of(run.id, "run.status")[-1]
    assert final["status"] == "failed" and "invalid script" in final["reason"]
    assert bus.runtime(run.id, "exited")[0]["exit_code"] not in (0, None)


async def test_cancel_kills_the_whole_process_group(workers, bus) -> None:
    workers.start()
    run = await make_run(sleepy(30))
    await bus.launch(run)
    await bus.until(lambda: bus.of(run.id, "run.llm"))  # the model asked for `sleep 30`
    pid = int(bus.runtime(run.id, "launched")[0]["detail"])
    await bus.until(lambda: len(process_groups(pid)) > 1)  # the runner started `sleep` (in a session of its own)
    groups = process_groups(pid)
    await bus.cancel(run.id)
    await bus.until(lambda: bus.runtime(run.id, "exited"))
    assert bus.statuses(run.id)[-1] == "cancelled"
    await bus.until(lambda: all(group_gone(g) for g in groups), tries=50)  # the `sleep` went with its runner


async def test_runner_enforces_its_wall_clock_limit(workers, bus) -> None:
    workers.start()
    run = await make_run(sleepy(30), wall_clock_s=1)
    await bus.launch(run)
    await bus.until(lambda: bus.runtime(run.id, "exited"))
    final = bus.of(run.id, "run.status")[-1]
    assert final["status"] == "timed_out" and "wall-clock" in final["reason"]
    assert bus.runtime(run.id, "exited")[0]["exit_code"] == 3


async def test_worker_times_out_a_hung_runner(workers, bus) -> None:
    """A runner that stops answering (SIGSTOP: no heartbeat, no own timeout) is killed at its deadline."""
    workers.start(deadline_grace_s=0.5)
    # Its own wall clock is well past the moment it is stopped, even on a loaded box: a runner still
    # running at its own limit times itself out (exit 3), which is another test's case.
    run = await make_run(sleepy(30), wall_clock_s=5)
    await bus.launch(run)
    await bus.until(lambda: bus.statuses(run.id) == ["running"])
    pid = int(bus.runtime(run.id, "launched")[0]["detail"])
    await bus.until(lambda: len(process_groups(pid)) > 1)
    groups = process_groups(pid)
    os.kill(pid, signal.SIGSTOP)
    # core-api's view, which the worker reads: the attempt is running since now.
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
    await bus.until(lambda: bus.runtime(run.id, "exited"), tries=300)
    statuses = bus.of(run.id, "run.status")
    assert statuses[-1]["status"] == "timed_out" and statuses[-1]["reason"] == "wall-clock limit of 5s exceeded"
    assert bus.runtime(run.id, "exited")[0]["exit_code"] == -signal.SIGKILL
    await bus.until(lambda: all(group_gone(g) for g in groups), tries=50)


async def test_runs_without_a_live_execution_are_lost(workers, bus) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    # A run whose runner vanished (no process, no heartbeat for an hour)…
    vanished = await make_run(
        QUICK,
        status="running",
        started_at=long_ago,
        last_heartbeat_at=long_ago,
        attempts=[{"n": 1, "status": "running", "started_at": long_ago}],
    )
    # …one claimed for launch by a worker that died before starting it…
    claimed = await make_run(QUICK, attempt=2)
    kv = await bus.js.create_key_value(KeyValueConfig(bucket=LAUNCH_BUCKET, ttl=7 * 86400, history=1))
    await kv.create(claim_key(claimed.id, 2), json.dumps({"worker": "dead-worker", "at": time.time() - 3600}).encode())
    # …and one heard from recently, which is left alone.
    alive = await make_run(
        QUICK, status="running", started_at=datetime.now(UTC), last_heartbeat_at=datetime.now(UTC) + timedelta(hours=1)
    )
    workers.start(heartbeat_timeout_s=2)
    await bus.until(lambda: bus.runtime(vanished.id, "lost") and bus.runtime(claimed.id, "lost"))
    assert "no heartbeat" in bus.runtime(vanished.id, "lost")[0]["detail"]
    lost = bus.runtime(claimed.id, "lost")[0]
    assert lost["attempt"] == 2 and lost["detail"] == "claimed for launch but never started"
    assert not bus.runtime(alive.id, "lost")

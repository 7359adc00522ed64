"""What a recovery sweep decides, one decision a test: a run whose runner is gone without a word is
lost (once, and only when nothing was heard of it), a launch claimed and never started is lost, a
run past its wall clock gets `timed_out` before its runner is stopped, a runner outliving its
launcher is adopted and its exit reported, and an execution whose run ended is cleaned up once its
run had time to exit on its own. Real NATS (stream and KV), real FerretDB, real processes watched by
pid as the local runtime watches runners."""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nexus.db.documents import Run
from nexus.events.bus import BUS_UNAVAILABLE, Publisher, connect, ensure_key_value, ensure_streams
from nexus.events.catalog import RUNS_STREAM
from nexus.events.envelope import decode_raw
from nexus.worker.launcher import LAUNCH_BUCKET, Launcher, claim_key
from nexus.worker.membership import WORKERS_BUCKET, Membership
from nexus.worker.recovery import Recovery
from nexus.worker.runtimes.base import RunRequest, RuntimeError_
from nexus.worker.runtimes.local import LocalProcessRuntime
from nexus.worker.secrets import SecretStore
from nexus.worker.slots import Slots
from tests.worker.conftest import group_gone

LONG_AGO = datetime.now(UTC) - timedelta(hours=1)


@dataclass
class Sweeper:
    recovery: Recovery
    launcher: Launcher
    runtime: LocalProcessRuntime
    claims: object
    nc: object
    runners: list[subprocess.Popen]

    def runner(self, run_id: str) -> subprocess.Popen:
        """A process standing for the run's runner, recorded as a launch records it."""
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
        self.runners.append(proc)
        run_dir = self.runtime.run_dir(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.runtime._record(run_dir, proc.pid, 1)
        return proc

    async def claim(self, run_id: str, by: str, at: float, attempt: int = 1) -> None:
        await self.claims.create(claim_key(run_id, attempt), json.dumps({"worker": by, "at": at}).encode())  # type: ignore[attr-defined]

    async def events(self, run_id: str) -> list[tuple[str, dict]]:
        """Every event on the run's subjects, in stream order: (type, data)."""
        sub = await self.nc.jetstream().subscribe(f"nexus.run.{run_id}.>", stream=RUNS_STREAM, ordered_consumer=True)  # type: ignore[attr-defined]
        out = []
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except TimeoutError:
                    return out
                env = decode_raw(msg.data)
                out.append((env.type, json.loads(bytes(env.data))))
        finally:
            await sub.unsubscribe()


@pytest.fixture
async def sweeper(fresh_db, nats_url: str, nats_creds: str, tmp_path: Path) -> AsyncIterator[Sweeper]:
    nc = await connect(nats_url, "tools", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    claims = await ensure_key_value(js, LAUNCH_BUCKET, ttl_s=7 * 86400)
    workers = await ensure_key_value(js, WORKERS_BUCKET, ttl_s=86400)
    me = f"w-{uuid.uuid4().hex[:6]}"
    runtime = LocalProcessRuntime(tmp_path / "runs", parent_env=dict(os.environ))
    publisher = Publisher(js, "worker")
    membership = Membership(workers, me, timeout_s=60)
    launcher = Launcher(
        runtime,
        publisher,
        claims,
        SecretStore(tmp_path / "secrets", {}),
        Slots(10, 10),
        nats_url=nats_url,
        worker_id=me,
        membership=membership,
    )
    recovery = Recovery(runtime, publisher, launcher, claims, membership, heartbeat_timeout_s=5, deadline_grace_s=0)
    s = Sweeper(recovery, launcher, runtime, claims, nc, [])
    try:
        yield s
    finally:
        for proc in s.runners:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        await launcher.close()
        await nc.drain()


async def a_run(status: str, **fields) -> str:
    run_id = f"run_{uuid.uuid4().hex}"
    await Run(
        id=run_id,
        task_id="task_1",
        agent_id="agt_1",
        agent_revision=1,
        session_id=f"ses_{run_id}",
        status=status,
        created_at=LONG_AGO,
        **fields,
    ).insert()
    return run_id


def gone_worker() -> str:
    return f"w-gone-{uuid.uuid4().hex[:6]}"  # never beat: not alive


async def test_a_silent_run_without_an_execution_is_lost_once(sweeper: Sweeper) -> None:
    run_id = await a_run("running", last_heartbeat_at=LONG_AGO, started_at=LONG_AGO, wall_clock_s=600)
    await sweeper.claim(run_id, gone_worker(), LONG_AGO.timestamp())
    sweeper.recovery.sightings.since = LONG_AGO  # this worker has listened for long enough to judge silence

    await sweeper.recovery.sweep()
    await sweeper.recovery.sweep()  # the run is still `running` in the database: said once all the same

    lost = [d for t, d in await sweeper.events(run_id) if t == "run.runtime" and d["phase"] == "lost"]
    assert len(lost) == 1, lost
    assert lost[0]["attempt"] == 1 and "no heartbeat" in lost[0]["detail"]


async def test_a_run_heard_on_the_bus_is_not_lost_on_a_stale_database(sweeper: Sweeper) -> None:
    """The database's view of a run lags when core-api is busy (or down); a heartbeat this worker heard
    itself keeps the run alive, and an end it heard means the run said so itself."""
    alive = await a_run("running", last_heartbeat_at=LONG_AGO, started_at=LONG_AGO, wall_clock_s=600)
    ended = await a_run("running", last_heartbeat_at=LONG_AGO, started_at=LONG_AGO, wall_clock_s=600)
    sweeper.recovery.sightings.since = LONG_AGO
    sweeper.recovery.sightings.seen[(alive, 1)] = datetime.now(UTC)
    sweeper.recovery.sightings.ended[(ended, 1)] = LONG_AGO

    await sweeper.recovery.sweep()

    for run_id in (alive, ended):
        assert not [t for t, d in await sweeper.events(run_id) if t == "run.runtime"], run_id


async def test_silence_counts_from_when_the_worker_started_listening(sweeper: Sweeper) -> None:
    """A worker that has just started has heard nothing yet: a run's old heartbeat in the database is
    not silence it may judge (the run may be beating while core-api, which stores beats, is down)."""
    run_id = await a_run("running", last_heartbeat_at=LONG_AGO, started_at=LONG_AGO, wall_clock_s=600)

    await sweeper.recovery.sweep()  # sightings.since is now: nothing heard for a while yet

    assert not [t for t, _ in await sweeper.events(run_id) if t == "run.runtime"]


async def test_a_launch_claimed_and_never_started_is_lost(sweeper: Sweeper) -> None:
    stuck = await a_run("queued", wall_clock_s=600)
    await sweeper.claim(stuck, gone_worker(), time.time() - 60)
    fresh = await a_run("queued", wall_clock_s=600)  # claimed a moment ago: its launch may be under way
    await sweeper.claim(fresh, gone_worker(), time.time())
    unclaimed = await a_run("queued", wall_clock_s=600)  # core-api's requeue covers it, not the worker

    await sweeper.recovery.sweep()

    lost = [d for t, d in await sweeper.events(stuck) if t == "run.runtime"]
    assert [(d["phase"], d["detail"]) for d in lost] == [("lost", "claimed for launch but never started")]
    for run_id in (fresh, unclaimed):
        assert not await sweeper.events(run_id), run_id


async def test_a_run_past_its_wall_clock_is_timed_out_before_its_runner_is_stopped(sweeper: Sweeper) -> None:
    run_id = await a_run(
        "running",
        wall_clock_s=1,
        started_at=LONG_AGO,
        last_heartbeat_at=datetime.now(UTC),
        attempts=[{"n": 1, "started_at": LONG_AGO}],
    )
    runner = sweeper.runner(run_id)
    await sweeper.claim(run_id, sweeper.launcher.worker_id, time.time())
    sweeper.launcher.watchers[run_id] = asyncio.create_task(asyncio.Event().wait())  # this worker launched it

    await sweeper.recovery.sweep()
    await sweeper.recovery.sweep()

    statuses = [d for t, d in await sweeper.events(run_id) if t == "run.status"]
    assert [(d["status"], d["attempt"]) for d in statuses] == [("timed_out", 1)], statuses
    assert "wall-clock limit of 1s" in statuses[0]["reason"]
    for _ in range(200):  # stopped by the sweep: its process group ends
        if group_gone(runner.pid):
            break
        await asyncio.sleep(0.05)
    assert group_gone(runner.pid)


async def test_a_runner_whose_launcher_died_is_adopted_and_its_exit_reported(sweeper: Sweeper) -> None:
    run_id = await a_run("running", wall_clock_s=600, started_at=datetime.now(UTC))
    runner = sweeper.runner(run_id)
    await sweeper.claim(run_id, gone_worker(), time.time())

    await sweeper.recovery.sweep()
    assert run_id in sweeper.launcher.watchers  # watched from now on, by this worker
    held = sweeper.launcher.slots.in_use
    runner.kill()

    for _ in range(200):
        if run_id not in sweeper.launcher.watchers:
            break
        await asyncio.sleep(0.05)
    runtime = [d for t, d in await sweeper.events(run_id) if t == "run.runtime"]
    assert [d["phase"] for d in runtime] == ["exited"], runtime
    assert sweeper.launcher.slots.in_use == held - 1  # the adopted run's slot is given back


async def test_an_execution_is_cleaned_up_only_once_its_run_ended_a_while_ago(sweeper: Sweeper) -> None:
    long_ended = await a_run("succeeded", ended_at=LONG_AGO)
    just_ended = await a_run("succeeded", ended_at=datetime.now(UTC) + timedelta(minutes=1))
    unknown = f"run_{uuid.uuid4().hex}"  # no run at all: nothing will ever stop it otherwise
    procs = {run_id: sweeper.runner(run_id) for run_id in (long_ended, just_ended, unknown)}

    await sweeper.recovery.sweep()

    for _ in range(200):
        if group_gone(procs[long_ended].pid) and group_gone(procs[unknown].pid):
            break
        await asyncio.sleep(0.05)
    assert group_gone(procs[long_ended].pid) and group_gone(procs[unknown].pid)
    assert procs[just_ended].poll() is None  # it is reporting its end and exiting on its own


async def test_a_launch_is_declared_lost_only_once_its_claim_is_marked(sweeper: Sweeper) -> None:
    """Its claimer may only have stood still (frozen, swapped out) and come back: the claim is marked
    lost first, by a compare-and-set, so the claimer finds it changed and starts nothing
    (`Launcher._still_ours`); a claimer that confirmed its start between the sweep's read and its mark
    wins, and the attempt is not declared lost — its runner would run beside the next attempt's."""
    marked = await a_run("queued", wall_clock_s=600)
    await sweeper.claim(marked, gone_worker(), time.time() - 60)
    started = await a_run("queued", wall_clock_s=600)
    await sweeper.claim(started, gone_worker(), time.time() - 60)
    read = sweeper.recovery._claim

    async def read_then_the_claimer_confirms(run):  # the claimer of `started` comes back right after the read
        claim = await read(run)
        if run.id == started:
            entry = await sweeper.claims.get(claim_key(started, 1))  # type: ignore[attr-defined]
            value = json.dumps({"worker": claim.worker, "at": time.time(), "starting": True}).encode()
            await sweeper.claims.update(claim_key(started, 1), value, last=entry.revision)  # type: ignore[attr-defined]
        return claim

    sweeper.recovery._claim = read_then_the_claimer_confirms  # type: ignore[method-assign]
    await sweeper.recovery.sweep()

    lost = [d["detail"] for t, d in await sweeper.events(marked) if t == "run.runtime"]
    assert lost == ["claimed for launch but never started"]
    assert json.loads((await sweeper.claims.get(claim_key(marked, 1))).value)["lost"] is True  # type: ignore[attr-defined]
    assert not await sweeper.events(started)


async def test_a_launch_still_under_way_is_not_lost_however_long_it_takes(sweeper: Sweeper) -> None:
    """A launch can outlast the lost-run timeout between its claim and its runner (a start retried with
    backoff, a fork under load, the bus away for a moment). Declared lost meanwhile, the next attempt
    would be launched and the runner this launch then starts would run beside it. Only a claim nobody
    is launching any more — this worker's that is no longer under way, a dead worker's — is lost."""
    under_way = await a_run("queued", wall_clock_s=600)
    await sweeper.claim(under_way, sweeper.launcher.worker_id, time.time() - 60)
    sweeper.launcher.launching.add((under_way, 1))
    given_up = await a_run("queued", wall_clock_s=600)  # claimed here, its launch ended without a runner
    await sweeper.claim(given_up, sweeper.launcher.worker_id, time.time() - 60)

    await sweeper.recovery.sweep()

    assert not await sweeper.events(under_way)
    lost = [d["detail"] for t, d in await sweeper.events(given_up) if t == "run.runtime"]
    assert lost == ["claimed for launch but never started"]


async def test_a_runner_of_a_run_an_operator_cancelled_is_stopped_even_without_the_bus(
    sweeper: Sweeper, nats_url: str, nats_creds: str
) -> None:
    """Its cancel command may never come (sent while the bus was out of reach): the database's word is
    enough, read by a sweep that cannot reach the bus at all."""
    cancelled = await a_run("cancelled", final_by="operator", ended_at=LONG_AGO)
    proc = sweeper.runner(cancelled)
    gone = await connect(nats_url, "tools", creds=nats_creds)
    workers = await ensure_key_value(gone.jetstream(), WORKERS_BUCKET, ttl_s=86400)
    sweeper.recovery.membership = Membership(workers, "w-cut-off", timeout_s=60)
    await gone.close()  # the sweep's bus is out of reach

    with pytest.raises(BUS_UNAVAILABLE):
        await sweeper.recovery.sweep()

    for _ in range(200):
        if group_gone(proc.pid):
            break
        await asyncio.sleep(0.05)
    assert group_gone(proc.pid)


async def test_a_stale_attempts_launch_leaves_the_next_attempts_runner_alone(sweeper: Sweeper) -> None:
    """A launch of attempt 1 that comes after attempt 2's runner started (its worker stood still, the
    run went on) is refused, not made room for: before, the older attempt's start stopped the newer
    attempt's runner ("never two at once"), the wrong one of the two."""
    run_id = await a_run("running", attempt=2)
    proc = sweeper.runner(run_id)
    sweeper.runtime._record(sweeper.runtime.run_dir(run_id), proc.pid, 2)  # the runner of attempt 2

    with pytest.raises(RuntimeError_, match="attempt 2 of the run is running already"):
        await sweeper.runtime.start_run(RunRequest(run_id=run_id, attempt=1, config=None))  # type: ignore[arg-type]  # never read

    assert proc.poll() is None  # attempt 2's runner lives on


async def test_an_earlier_attempts_runner_is_stopped_without_a_word(sweeper: Sweeper, tmp_path: Path) -> None:
    """Attempt 2 starting beside attempt 1's runner (attempt 1 ended without a verdict while its runner
    lived) stops it with SIGKILL, not SIGTERM: told to cancel, that runner reported `cancelled` for
    attempt 1, the earliest verdict decided the run, and it ended cancelled with nobody having
    cancelled it (`worker@launching~freeze/2`)."""
    run_id = await a_run("queued", attempt=2)
    said, ready = tmp_path / "said-cancelled", tmp_path / "ready"
    old = subprocess.Popen(  # a runner: on SIGTERM it says `cancelled` (here: writes a file) and exits
        [
            sys.executable,
            "-c",
            "import signal, sys, time, pathlib\n"
            f"signal.signal(signal.SIGTERM, lambda *_: (pathlib.Path({str(said)!r}).write_text('cancelled'), sys.exit(0)))\n"
            f"pathlib.Path({str(ready)!r}).touch()\n"
            "time.sleep(120)",
        ],
        start_new_session=True,
    )
    sweeper.runners.append(old)
    for _ in range(600):  # its handler in place
        if ready.exists():
            break
        await asyncio.sleep(0.05)
    sweeper.runtime.run_dir(run_id).mkdir(parents=True, exist_ok=True)
    sweeper.runtime._record(sweeper.runtime.run_dir(run_id), old.pid, 1)
    new = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    sweeper.runners.append(new)

    async def started_cold(*_: object) -> int:  # attempt 2's runner: a stand-in
        return new.pid

    sweeper.runtime._start_cold = started_cold  # type: ignore[method-assign]
    await sweeper.runtime.start_run(RunRequest(run_id=run_id, attempt=2, config=None))  # type: ignore[arg-type]  # stored, not read

    assert old.wait(30) == -9
    assert not said.exists()

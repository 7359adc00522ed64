"""A launch is launched without reading its run when the bus says it is current (first delivery, no
cancel heard, stored after this worker began hearing every cancel) — and read, as before, whenever
that is not known: a cancel heard, a command stored before the worker listened, a claim taken over.
A cancel heard while a launch is under way stops it. Real worker processes, NATS and FerretDB; the
tests store runs and publish commands as core-api would."""

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from nexus.db.documents import Run
from nexus.dev.servers import free_port
from nexus.events.bus import Publisher, connect, ensure_key_value, ensure_streams
from nexus.events.payloads import LaunchRun
from nexus.worker.freshness import Freshness
from nexus.worker.launcher import LAUNCH_BUCKET, Launcher, claim_key
from nexus.worker.runtimes.record import read_record
from nexus.worker.membership import WORKERS_BUCKET, Membership
from nexus.worker.runtimes.local import LocalProcessRuntime, pid_alive
from nexus.worker.secrets import SecretStore
from nexus.worker.slots import Slots
from tests.worker.conftest import QUICK, make_run, run_config, sleepy
from tests.worker.test_dispatch import _until_drained

pytestmark = pytest.mark.infra


async def metric(port: int, name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include `labels` (0 when there is none yet)."""
    async with httpx.AsyncClient(timeout=30) as c:
        text = (await c.get(f"http://127.0.0.1:{port}/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def run_reads(port: int) -> float:
    return await metric(port, "nexus_db_commands_total", command="find", collection="runs")


async def start_listening_worker(workers, bus, **settings) -> int:
    """A worker that has handled one launch: its cancel subscription was confirmed before its intake began."""
    port = free_port()
    workers.start(metrics_port=port, launch_fresh_margin_s=0, **settings)
    first = await make_run(QUICK)
    await bus.launch(first)
    await bus.until(lambda: bus.runtime(first.id, "exited"), tries=600)
    return port


async def cancelled(run: Run) -> None:
    """What core-api does first when an operator cancels: the run is stored final."""
    run.status = "cancelled"
    await run.save()


async def test_a_current_launch_reads_no_run(workers, bus) -> None:
    port = await start_listening_worker(workers, bus, sweep_interval_s=3600)  # a sweep reads runs too
    reads = await run_reads(port)
    runs = [await make_run(QUICK) for _ in range(3)]
    for run in runs:
        await bus.launch(run)
    await bus.until(lambda: all(bus.runtime(r.id, "exited") for r in runs), tries=600)
    for run in runs:
        assert bus.statuses(run.id) == ["running", "succeeded"]
    assert await run_reads(port) == reads  # none of the three was read
    assert await metric(port, "nexus_launch_checks_total", how="bus") >= 3


async def test_a_launch_of_a_run_whose_cancel_was_heard_is_not_started(workers, bus) -> None:
    port = await start_listening_worker(workers, bus)
    read_before = await metric(port, "nexus_launch_checks_total", how="read")
    run = await make_run(QUICK)
    await cancelled(run)
    await bus.cancel(run.id)
    await bus.launch(run)  # dispatch raced the cancel: the command comes after it
    await _until_drained(bus)
    assert not bus.runtime(run.id, "launched")
    assert await metric(port, "nexus_launch_checks_total", how="read") == read_before + 1  # judged by the database


async def test_a_launch_stored_before_the_worker_listened_is_read(workers, bus) -> None:
    run = await make_run(QUICK)
    await cancelled(run)  # its cancel went out while no worker was listening
    await bus.launch(run)
    port = free_port()
    workers.start(metrics_port=port, launch_fresh_margin_s=0, sweep_interval_s=3600)
    await _until_drained(bus)
    later = await make_run(QUICK)  # the worker is launching: it handled the stale command before this one
    await bus.launch(later)
    await bus.until(lambda: bus.runtime(later.id, "exited"), tries=600)
    assert not bus.runtime(run.id, "launched")
    assert await run_reads(port) >= 2  # the sweep at start, and the stale command


async def test_a_cancel_heard_between_the_claim_and_the_start_stops_the_launch(workers, bus) -> None:
    await start_listening_worker(workers, bus, fault_pause_after_claim_s=3)
    run = await make_run(sleepy(120), wall_clock_s=300)
    await bus.launch(run)
    kv = await bus.js.key_value(LAUNCH_BUCKET)

    async def claimed() -> bool:
        try:
            await kv.get(claim_key(run.id, 1))
        except Exception:  # noqa: BLE001 — not claimed yet
            return False
        return True

    await bus.until_async(claimed)
    await cancelled(run)
    await bus.cancel(run.id)
    await _until_drained(bus)
    assert not bus.runtime(run.id, "launched")
    assert not bus.statuses(run.id)


async def test_a_cancel_heard_while_the_runner_starts_stops_it(fresh_db, nats_url, nats_creds, tmp_path: Path) -> None:
    """The cancel broadcast found no runner yet (it was being forked): the launch stops it once started."""
    nc = await connect(nats_url, "tools", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    claims = await ensure_key_value(js, LAUNCH_BUCKET, ttl_s=7 * 86400)
    members = await ensure_key_value(js, WORKERS_BUCKET, ttl_s=86400)
    freshness = Freshness(margin_s=0)
    freshness.listening()
    runtime = LocalProcessRuntime(
        tmp_path / "runs",
        parent_env=dict(os.environ),
        runner_cmd=[sys.executable, "-c", "import time; time.sleep(120)"],
        kill_grace_s=1,
    )
    started = runtime.start_run

    async def start_then_cancel(request):
        handle = await started(request)
        freshness.heard_cancel(request.run_id)  # the broadcast came while start_run was under way
        return handle

    runtime.start_run = start_then_cancel  # type: ignore[method-assign]
    me = f"w-{uuid.uuid4().hex[:6]}"
    launcher = Launcher(
        runtime,
        Publisher(js, "worker"),
        claims,
        SecretStore(tmp_path / "secrets", {}),
        Slots(10, 10),
        nats_url=nats_url,
        worker_id=me,
        membership=Membership(members, me, timeout_s=60),
        freshness=freshness,
    )
    try:
        run = await make_run(QUICK)
        cmd = LaunchRun(attempt=1, config=await run_config(run))
        await launcher.launch(cmd, await launcher.slots.acquire(run.agent_id), stored_at=time.time(), deliveries=1)
        record = read_record(runtime.run_dir(run.id))
        assert record is not None
        pid = record.pid
        for _ in range(300):  # stopped, not left to sleep for two minutes
            if not pid_alive(pid):
                break
            await asyncio.sleep(0.1)
        assert not pid_alive(pid)
        assert json.loads((await claims.get(claim_key(run.id, 1))).value or b"{}")["worker"] == me
    finally:
        await launcher.close()
        await nc.drain()


async def test_a_claim_of_a_dead_worker_is_taken_over_only_after_reading_the_run(workers, bus) -> None:
    """A command core-api published again (its requeue) for an attempt a dead worker claimed: on the bus it
    looks current, but the run may have ended since — the takeover reads it first."""
    await start_listening_worker(workers, bus)
    kv = await bus.js.key_value(LAUNCH_BUCKET)
    ended, queued = await make_run(QUICK), await make_run(QUICK)
    ended.status = "succeeded"  # its runner, started by the dead worker, finished it
    await ended.save()
    for run in (ended, queued):
        await kv.create(claim_key(run.id, 1), json.dumps({"worker": "dead-worker", "at": time.time()}).encode())
        await bus.launch(run, msg_id=uuid.uuid4().hex)
    await bus.until(lambda: bus.runtime(queued.id, "exited"), tries=600)
    await _until_drained(bus)
    assert not bus.runtime(ended.id, "launched")
    assert bus.statuses(queued.id) == ["running", "succeeded"]  # a claim still current is taken over

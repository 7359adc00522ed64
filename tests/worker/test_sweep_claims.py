"""A recovery sweep reads a run's launch claim (a KV round trip) only where the claim decides
something: a run this worker watches needs none, a running run nobody watches does (its launcher may
be gone: then this worker adopts it). At 50 runs in flight, most of every sweep is watched runs.
Real NATS KV, real FerretDB, real runner-like processes watched by pid."""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from nexus.db.documents import Run
from nexus.events.bus import Publisher, connect, ensure_key_value, ensure_streams
from nexus.worker.launcher import LAUNCH_BUCKET, Launcher, claim_key
from nexus.worker.membership import WORKERS_BUCKET, Membership
from nexus.worker.recovery import Recovery
from nexus.worker.runtimes.local import LocalProcessRuntime
from nexus.worker.secrets import SecretStore
from nexus.worker.slots import Slots


class CountedReads:
    """The real bucket; the keys read through it are noted."""

    def __init__(self, kv) -> None:
        self.kv = kv
        self.reads: list[str] = []

    async def get(self, key: str, *args, **kwargs):
        self.reads.append(key)
        return await self.kv.get(key, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.kv, name)


def a_running_run(run_id: str, **fields) -> Run:
    return Run(
        id=run_id,
        task_id="task_1",
        agent_id="agt_1",
        agent_revision=1,
        session_id=f"ses_{run_id}",
        status="running",
        **fields,
    )


async def running_run(run_id: str, **fields) -> None:
    await a_running_run(run_id, **fields).insert()


async def test_a_sweep_reads_the_claims_of_unwatched_runs_only(fresh_db, nats_url, nats_creds, tmp_path: Path) -> None:
    nc = await connect(nats_url, "tools", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    # The buckets as the worker makes them: the session's NATS server is shared, and a bucket made
    # with another configuration refuses every later maker of it.
    claims = CountedReads(await ensure_key_value(js, LAUNCH_BUCKET, ttl_s=7 * 86400))
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
    recovery = Recovery(runtime, publisher, launcher, claims, membership, heartbeat_timeout_s=120)
    runners: list[subprocess.Popen] = []
    watched, unwatched = f"run_{uuid.uuid4().hex}", f"run_{uuid.uuid4().hex}"
    try:
        for run_id, launched_by in ((watched, me), (unwatched, f"w-gone-{uuid.uuid4().hex[:6]}")):
            await running_run(run_id, config={"limits": {"wall_clock_s": 600}})
            runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
            runners.append(runner)
            run_dir = runtime.run_dir(run_id)
            run_dir.mkdir(parents=True)
            runtime._record(run_dir, runner.pid, 1)  # as a launch records its runner
            await claims.create(claim_key(run_id, 1), json.dumps({"worker": launched_by, "at": time.time()}).encode())
        launcher.watchers[watched] = asyncio.create_task(asyncio.Event().wait())  # this worker launched it
        claims.reads.clear()

        await recovery.sweep()

        assert claims.reads == [claim_key(unwatched, 1)], claims.reads
        assert unwatched in launcher.watchers  # its launcher stopped beating: adopted, watched from now on
    finally:
        for runner in runners:
            runner.kill()
            runner.wait()
        for task in launcher.watchers.values():
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*launcher.watchers.values(), return_exceptions=True)
        await nc.drain()


async def test_a_sweep_reads_of_a_run_its_state_and_limit_and_no_config(fresh_db) -> None:
    from nexus.db.run_configs import store_run
    from nexus.worker.recovery import active_runs, wall_clock_limit

    run_id = f"run_{uuid.uuid4().hex}"
    run = a_running_run(run_id, wall_clock_s=42, attempts=[{"n": 1, "started_at": "2026-01-01T00:00:00Z"}])
    await store_run(run, {"system_prompt": "x" * 20_000, "limits": {"wall_clock_s": 42, "max_steps": 3}})
    (swept,) = [r for r in await active_runs(["running"]) if r.id == run_id]
    assert (swept.wall_clock_s, swept.config, wall_clock_limit(swept)) == (42, {}, 42)
    assert (swept.agent_id, swept.status, swept.attempt, swept.attempts[0]["n"]) == ("agt_1", "running", 1, 1)
    assert swept.created_at is not None


async def test_a_run_stored_with_its_config_inline_is_swept_with_its_configs_limit(fresh_db) -> None:
    """A run stored before configs were kept apart: its limit is its inline config's, and of that
    config the sweep reads the limits only."""
    from beanie.odm.utils.dump import get_dict

    from nexus.worker.recovery import active_runs, wall_clock_limit

    run_id = f"run_{uuid.uuid4().hex}"
    limits = {"wall_clock_s": 7, "max_steps": 3}
    run = a_running_run(run_id, attempts=[{"n": 1, "started_at": "2026-01-01T00:00:00Z"}])
    old_shape = get_dict(run, to_db=True) | {"config": {"system_prompt": "x" * 20_000, "limits": limits}}
    del old_shape["wall_clock_s"]
    await Run.get_pymongo_collection().insert_one(old_shape)
    (swept,) = [r for r in await active_runs(["running"]) if r.id == run_id]
    assert (swept.wall_clock_s, swept.config, wall_clock_limit(swept)) == (None, {"limits": limits}, 7)

"""A launch claimed by a worker that died before starting it is taken over at once by a live worker
(its liveness is read from the nexus_workers KV), not after the heartbeat timeout; and a worker that only
stood still, and finds its claim taken when it comes back, starts nothing."""

import asyncio
import json
import time

import pytest
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyNotFoundError

from nexus.dev.servers import free_port
from nexus.worker.launcher import LAUNCH_BUCKET, claim_key
from tests.worker.conftest import QUICK, make_run
from tests.worker.test_launch_freshness import metric

pytestmark = pytest.mark.infra


async def test_a_dead_workers_claim_is_taken_over(workers, bus) -> None:
    run = await make_run(QUICK)
    kv = await bus.js.create_key_value(KeyValueConfig(bucket=LAUNCH_BUCKET, ttl=7 * 86400, history=1))
    await kv.create(claim_key(run.id, 1), json.dumps({"worker": "dead-worker", "at": time.time()}).encode())
    workers.start(heartbeat_timeout_s=600)  # the lost-run sweep cannot be what starts it
    await bus.launch(run)
    await bus.until(lambda: bus.runtime(run.id, "exited"))
    assert bus.statuses(run.id) == ["running", "succeeded"]
    assert not bus.runtime(run.id, "lost")
    holder = json.loads((await kv.get(claim_key(run.id, 1))).value)["worker"]
    assert holder != "dead-worker"


async def test_a_launch_taken_from_a_worker_that_stood_still_is_not_started(workers, bus) -> None:
    """A worker that stands still between its claim and its runner's start (frozen, swapped out) looks
    dead to the others: one's sweep marks the claim and declares the attempt lost, and the run goes on to
    its next attempt. Come back, the worker must not start the runner it was about to: it would run beside
    the next attempt's (fault matrix, `worker@launching~freeze/2`: that old runner, stopped to make way
    for the next attempt, reported `cancelled`, and the run ended cancelled with nobody having cancelled it)."""
    port = free_port()
    # Its beats stored at its start and not again (no beat, no sweep): standing still 3 s after the claim,
    # it is past half of its 2 s of liveness when it comes back. (A worker that surely beat throughout is
    # judged dead by nobody, and skips the check: `test_membership.py`.)
    workers.start(
        metrics_port=port,
        fault_pause_after_claim_s=3,
        heartbeat_timeout_s=600,
        worker_beat_s=3600,
        sweep_interval_s=3600,
        worker_dead_after_s=2,
    )
    run = await make_run(QUICK)
    kv = await bus.js.key_value(LAUNCH_BUCKET)
    await bus.launch(run)
    entry = None
    for _ in range(600):
        try:
            entry = await kv.get(claim_key(run.id, 1))
            break
        except KeyNotFoundError:
            await asyncio.sleep(0.05)
    assert entry is not None, "the launch was never claimed"
    claimed = json.loads(entry.value or b"{}")
    # What the other worker's sweep does before it says the attempt lost (recovery.Recovery._fence).
    await kv.update(claim_key(run.id, 1), json.dumps({**claimed, "lost": True}).encode(), last=entry.revision)

    async def given_up() -> bool:
        return await metric(port, "nexus_run_executions_total", event="superseded") >= 1

    await bus.until_async(given_up)
    assert not bus.runtime(run.id, "launched")
    assert bus.statuses(run.id) == []

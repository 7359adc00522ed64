"""A launch claimed by a worker that died before starting it is taken over at once by a live worker
(its liveness is read from the nexus_workers KV), not after the heartbeat timeout."""

import json
import time

import pytest
from nats.js.api import KeyValueConfig

from nexus.worker.launcher import LAUNCH_BUCKET, claim_key
from tests.worker.conftest import QUICK, make_run

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

"""What the worker heard from runners outlives a sweep that started before it: a run launched and
ended during one sweep (not in that sweep's list yet) must not then be declared lost for silence. What
the worker says itself is noted without being sent back to it."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from nexus.events.bus import Publisher, connect, ensure_streams
from nexus.events.payloads import RunStatusChanged
from nexus.worker.launcher import Launcher
from nexus.worker.main import connect_bus
from nexus.worker.sightings import Sightings
from nexus.worker.slots import Slots
from tests.conftest import creds_of
from tests.worker.conftest import FlakyRuntime


def test_prune_keeps_what_was_heard_after_the_sweep_began() -> None:
    s = Sightings()
    sweep_began = datetime.now(UTC)
    s.seen = {
        ("run_old", 1): sweep_began - timedelta(seconds=5),
        ("run_new", 1): sweep_began + timedelta(seconds=1),
        ("run_live", 1): sweep_began - timedelta(seconds=5),
    }
    s.ended = {("run_old", 1): sweep_began - timedelta(seconds=5), ("run_new", 1): sweep_began + timedelta(seconds=1)}
    s.prune({"run_live"}, sweep_began)
    assert set(s.seen) == {("run_new", 1), ("run_live", 1)}  # the old, inactive one is forgotten
    assert ("run_new", 1) in s.ended and ("run_old", 1) not in s.ended
    s.prune(set(), sweep_began + timedelta(seconds=2))  # the next sweep, which would have listed it
    assert not s.seen and not s.ended


@pytest.mark.infra
async def test_the_workers_own_reports_are_noted_not_sent_back_while_runners_are_heard(
    nats_url: str, nats_auth: Path | None, nats_creds: str
) -> None:
    """The worker's connection does not echo: what it says of a run it notes itself once the bus took it
    (two deliveries per run fewer), and what a runner says still reaches it."""
    nc = await connect_bus(nats_url, creds_of(nats_auth, "worker"))
    other = await connect(nats_url, "a-runner", creds=nats_creds)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        unused = cast(Any, None)  # reporting reaches neither the claims nor the secrets
        launcher = Launcher(
            cast(Any, FlakyRuntime([])),
            Publisher(js, "worker"),
            unused,
            unused,
            Slots(4, 4),
            nats_url="",
            worker_id="w",
        )
        delivered: list[str] = []
        real_on = launcher.sightings._on

        async def counting(msg: Any) -> None:
            delivered.append(msg.subject)
            await real_on(msg)

        launcher.sightings._on = counting  # type: ignore[method-assign]
        await launcher.sightings.start(nc)
        run_id = f"run_{uuid.uuid4().hex}"
        await launcher.report(run_id, 1, "launched", "123")
        assert (run_id, 1) in launcher.sightings.seen and (run_id, 1) not in launcher.sightings.ended
        await launcher.report(run_id, 1, "exited", exit_code=0)
        assert (run_id, 1) in launcher.sightings.ended  # noted at once, not when the bus sends it back

        # A runner's word on its own connection is heard as ever.
        said = RunStatusChanged(status="succeeded", attempt=2)
        await Publisher(other.jetstream(), "agent-runner").publish("run.status", said, run_id=run_id)
        for _ in range(100):
            if (run_id, 2) in launcher.sightings.ended:
                break
            await asyncio.sleep(0.02)
        assert (run_id, 2) in launcher.sightings.ended
        await nc.flush()
        assert delivered == [f"nexus.run.{run_id}.status"]  # the worker's two reports were not sent back
    finally:
        await other.close()
        await nc.close()

"""A forked run's events ride the worker's NATS connection (the relay), and a worker killed while forked
runs are mid-way loses none of their events and doubles none: each runner connects for itself and
publishes again what the relay had not acknowledged, with the same message ids. Real worker, zygote,
runner processes and NATS."""

import asyncio
import os
import re
import signal
import socket
import uuid
from collections import Counter

import httpx
import pytest

from nexus.dev.servers import free_port
from nexus.events import relay as frames
from nexus.events.bus import connect, ensure_streams
from nexus.events.envelope import encode, make_envelope
from nexus.events.payloads import Heartbeat, RunStatusChanged
from nexus.events.permissions import RunIdentity
from nexus.worker.runtimes.relay import Relays
from nexus.worker.sightings import Sightings
from tests.agent_runner.test_runner_support import read_events
from tests.conftest import creds_of
from tests.worker.conftest import QUICK, make_run
from tests.worker.test_zygote import ready_worker

pytestmark = pytest.mark.infra
# Steps that each say something, with a command's sleep between them: a run is mid-way for seconds.
STEPPED = """steps:
  - tool_calls:
      - name: write_file
        args: {path: "a.txt", content: "one"}
  - tool_calls:
      - name: run_command
        args: {cmd: "sleep 1"}
  - tool_calls:
      - name: write_file
        args: {path: "b.txt", content: "two"}
  - tool_calls:
      - name: run_command
        args: {cmd: "sleep 1"}
  - say: "done"
"""


def relayed(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    found = re.search(r'^nexus_relayed_publishes_total\{outcome="published"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def events_of(bus, run_id: str) -> list[dict]:
    """What the runner said, as stored in its stream: heartbeats left out (their number follows the clock),
    and the worker's own runtime events (a killed worker never says the runner exited)."""
    return [env for _, env in await read_events(bus.js, run_id) if env["type"] not in ("run.heartbeat", "run.runtime")]


async def test_forked_runs_publish_every_event_through_the_worker(workers, bus) -> None:
    port = free_port()
    await ready_worker(workers, bus, metrics_port=port, runner_heartbeat_s=60)
    runs = [await make_run(QUICK) for _ in range(4)]
    for run in runs:
        await bus.launch(run)
    await bus.until(lambda: all(bus.runtime(r.id, "exited") for r in runs), tries=900)
    stored = 0
    for run in runs:
        assert bus.statuses(run.id) == ["running", "succeeded"], run.id
        stored += len([e for e in bus.of(run.id) if e.get("runtime") is None])  # the runner's, not the worker's
    assert relayed(port) == stored  # every event the runners said went through the worker, none on their own


async def test_killing_the_worker_mid_run_loses_no_forked_event_and_doubles_none(workers, bus) -> None:
    await ready_worker(workers, bus)
    control = await make_run(STEPPED)
    await bus.launch(control)
    await bus.until(lambda: bus.runtime(control.id, "exited"), tries=900)
    expected = Counter(e["type"] for e in await events_of(bus, control.id))
    runs = [await make_run(STEPPED) for _ in range(6)]
    for run in runs:
        await bus.launch(run)
    await bus.until(lambda: all(bus.of(r.id, "run.tool") for r in runs), tries=900)
    worker = workers.procs[-1][0]
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its zygote; the runners are in sessions of their own
    worker.wait()
    mid_way = [r for r in runs if "succeeded" not in bus.statuses(r.id)]
    assert mid_way, "every run had ended before the worker was killed"
    await bus.until(lambda: all("succeeded" in bus.statuses(r.id) for r in runs), tries=900)
    for run in runs:
        events = await events_of(bus, run.id)
        assert Counter(e["type"] for e in events) == expected, run.id  # nothing lost, nothing doubled
        assert len({e["id"] for e in events}) == len(events), run.id
        statuses = [e["data"]["status"] for e in events if e["type"] == "run.status"]
        assert statuses == ["running", "succeeded"], run.id


async def test_the_worker_hears_what_it_relays_as_it_hears_a_runner_on_the_bus(nats_url, nats_auth) -> None:
    """The worker's connection does not echo its own publishes: a relayed heartbeat or status reaches its
    sightings (what keeps a run that said its end from being declared lost while core-api lags) from the relay."""
    nc = await connect(nats_url, "worker", creds=creds_of(nats_auth, "worker"))
    await ensure_streams(nc.jetstream())
    sightings = Sightings()
    relays = Relays(nc)
    relays.heard = sightings.note
    run_id = f"run_{uuid.uuid4().hex[:12]}"
    mine, theirs = socket.socketpair()
    await relays.serve(mine, RunIdentity(run_id, 2, "ses_x"))
    reader, writer = await asyncio.open_unix_connection(sock=theirs)
    for seq, (kind, data) in enumerate(
        [
            ("run.heartbeat", Heartbeat(attempt=2, step=1, pid=1)),
            ("run.status", RunStatusChanged(status="succeeded", attempt=2)),
        ]
    ):
        env = make_envelope(kind, data, source="agent-runner", correlation_id=run_id)
        writer.write(frames.request(seq, f"nexus.run.{run_id}.{kind[4:]}", encode(env), {"Nats-Msg-Id": env.id}))
    got = frames.Frames(1 << 20)
    bodies: list[bytes] = []
    while len(bodies) < 2:
        bodies += got.feed(await asyncio.wait_for(reader.read(65536), 10))
    assert (run_id, 2) in sightings.seen and (run_id, 2) in sightings.ended
    writer.close()
    await nc.close()

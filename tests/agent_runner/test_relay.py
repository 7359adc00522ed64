"""A forked run's publishes ride the worker's relay; when the relay breaks — the worker dies before it
answers, with some of the run's events published and some not, or stops answering — the run connects with
its own credential and publishes again everything the relay had not acknowledged, with the same message
ids: the stream holds every event once, in the reporter's order of statuses. Real NATS; the worker's end is
played by the test (the real worker's end: tests/worker/test_relay.py)."""

import asyncio
import socket
import uuid

import pytest

from nexus.agent_runner.relay import RunBus
from nexus.agent_runner.reporter import RunReporter
from nexus.events import relay as frames
from nexus.events.bus import connect
from tests.agent_runner.test_runner_support import RUN_SIGNER, js, read_events  # noqa: F401 — the fixture
from nexus.events.permissions import RunIdentity

pytestmark = pytest.mark.infra


class WorkerEnd:
    """The worker's end of a relay, as told: publish each frame's message to JetStream (as the worker
    does), answer the first `answer` of them, publish `more` without answering, then die (close) — or,
    with `hang`, keep the socket open and never answer again."""

    def __init__(self, js, sock: socket.socket, *, answer: int, more: int, hang: bool = False) -> None:
        self.js, self.sock, self.answer, self.more, self.hang = js, sock, answer, more, hang
        self.seen: list[str] = []  # the message ids of the frames it read

    async def serve(self) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=self.sock)
        parts = frames.Frames(1 << 20)
        while len(self.seen) < self.answer + self.more:
            data = await reader.read(65536)
            if not data:
                break
            for body in parts.feed(data):
                seq, subject, headers, payload = frames.parse_request(body)
                self.seen.append(headers["Nats-Msg-Id"])
                if len(self.seen) > self.answer + self.more:
                    continue
                ack = await self.js._nc.request(subject, payload, timeout=5, headers=headers)
                if len(self.seen) <= self.answer:
                    writer.write(frames.reply(seq, frames.ACK, ack.data))
        if self.hang:
            await asyncio.sleep(3600)
        writer.close()


async def relayed_run(js, nats_url: str, end: WorkerEnd, theirs: socket.socket, run_id: str) -> tuple[RunBus, list]:
    connects: list[str] = []
    creds = RUN_SIGNER[0].mint(RunIdentity(run_id, 1, "ses_relay"), 60) if RUN_SIGNER else ""

    async def own_connection():
        connects.append(run_id)
        return await connect(nats_url, f"agent-runner-{run_id}", creds=creds, user=run_id)

    bus = await RunBus.open(own_connection, theirs.detach())
    return bus, connects


async def play(bus: RunBus, run_id: str) -> None:
    reporter = RunReporter(bus.js, run_id, 1)
    await reporter.status("running")
    for i in range(10):
        await reporter.log(f"line {i}")
    await reporter.status("succeeded")


def stored(events: list) -> list[tuple[str, str]]:
    return [(e["type"], e["data"].get("message") or e["data"].get("status")) for _, e in events]


EXPECTED = [("run.status", "running"), *[("run.log", f"line {i}") for i in range(10)], ("run.status", "succeeded")]


async def played_through(js, nats_url: str, **worker_end: int) -> tuple[str, "WorkerEnd", list[str], list]:
    """A run played over a relay whose worker end behaves as `worker_end` says: (run id, the worker's end,
    the connections the run made of its own, the events stored)."""
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    mine, theirs = socket.socketpair()
    end = WorkerEnd(js, mine, **worker_end)
    serving = asyncio.create_task(end.serve())
    bus, connects = await relayed_run(js, nats_url, end, theirs, run_id)
    await play(bus, run_id)
    await bus.close()
    await serving
    return run_id, end, connects, await read_events(js, run_id)


async def test_a_relayed_run_publishes_every_event_once_without_a_connection_of_its_own(js, nats_url) -> None:
    run_id, end, connects, events = await played_through(js, nats_url, answer=12, more=0)
    assert stored(events) == EXPECTED
    assert connects == []  # every publish rode the relay
    assert [e["id"] for _, e in events] == end.seen


@pytest.mark.parametrize("answered, published", [(1, 0), (1, 5), (3, 9), (0, 1)])
async def test_a_worker_dying_mid_run_loses_nothing_and_doubles_nothing(js, nats_url, answered, published) -> None:
    """The worker read the run's frames, published `answered + published` of them to JetStream, answered
    only the first `answered`, and died: the run publishes the rest itself, each event stored once."""
    run_id, end, connects, events = await played_through(js, nats_url, answer=answered, more=published)
    assert stored(events) == EXPECTED if published == 0 else sorted(stored(events)) == sorted(EXPECTED)
    assert stored(events)[0] == EXPECTED[0] and stored(events)[-1] == EXPECTED[-1]  # statuses stay barriers
    assert len({e["id"] for _, e in events}) == len(EXPECTED)
    assert set(end.seen[: answered + published]) <= {e["id"] for _, e in events}  # the same ids, deduplicated
    assert connects == [run_id]  # it connected for itself once the relay broke


async def test_a_worker_that_stops_answering_is_not_waited_for(js, nats_url) -> None:
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    mine, theirs = socket.socketpair()
    end = WorkerEnd(js, mine, answer=1, more=2, hang=True)
    serving = asyncio.create_task(end.serve())
    bus, connects = await relayed_run(js, nats_url, end, theirs, run_id)
    bus.js._timeout = 0.5  # a publish's wait for its ack
    await play(bus, run_id)
    await bus.close()
    serving.cancel()
    events = await read_events(js, run_id)
    assert sorted(stored(events)) == sorted(EXPECTED) and stored(events)[-1] == EXPECTED[-1]
    assert len({e["id"] for _, e in events}) == len(EXPECTED)
    assert connects == [run_id]

"""The worker's end of a forked run's relay, attacked as a run's own code would: the worker publishes
for the run only what the run's own credential would let it publish (`run_streamed`), in frames no
larger than a publish, with a message id and only the headers a run sends, never more publishes at once
than a run makes. Anything else closes that relay — nothing published, another run's relay untouched, the
worker's loop unharmed. The worker's end is the real one (`RunRelay`), on the worker's own credential."""

import asyncio
import json
import socket
import struct
import uuid

import pytest

from nexus.events import relay as frames
from nexus.events.bus import connect, ensure_streams
from nexus.events.catalog import RUNS_STREAM
from nexus.events.permissions import RunIdentity
from nexus.worker.runtimes.relay import MAX_OUTSTANDING, Relays
from tests.conftest import creds_of

pytestmark = pytest.mark.infra


@pytest.fixture
async def worker_nc(nats_url: str, nats_auth):
    nc = await connect(nats_url, "worker", creds=creds_of(nats_auth, "worker"))
    yield nc
    await nc.close()


@pytest.fixture
async def looker(nats_url: str, nats_creds: str):
    nc = await connect(nats_url, "tests", creds=nats_creds)
    await ensure_streams(nc.jetstream())
    yield nc.jetstream()
    await nc.close()


async def child_end(worker_nc, run_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """What a forked runner holds: its end of a relay the worker serves for `run_id`."""
    mine, theirs = socket.socketpair()
    await Relays(worker_nc).serve(mine, RunIdentity(run_id, 1, f"ses_{run_id[4:]}"))
    return await asyncio.open_unix_connection(sock=theirs)


def publish(subject: str, *, msg_id: str | None = None, headers: dict[str, str] | None = None) -> bytes:
    return frames.request(
        1, subject, b'{"x": 1}', {"Nats-Msg-Id": msg_id or uuid.uuid4().hex} if headers is None else headers
    )


def raw(subject: bytes, head: bytes, payload: bytes = b"{}") -> bytes:
    body = frames.REQUEST.pack(1, len(subject), len(head)) + subject + head + payload
    return frames.LENGTH.pack(len(body)) + body


async def until_closed(reader: asyncio.StreamReader) -> list[int]:
    """The outcomes the child was sent until the worker closed the relay (a relay left open fails the test)."""
    got = frames.Frames(1 << 20)
    outcomes: list[int] = []
    while data := await asyncio.wait_for(reader.read(65536), 10):
        outcomes += [frames.REPLY.unpack_from(body)[1] for body in got.feed(data)]
    return outcomes


async def stored(js, subject: str) -> int:
    info = await js.stream_info(RUNS_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


def attacks(own: str, other: str) -> dict[str, bytes]:
    msg = {"Nats-Msg-Id": uuid.uuid4().hex}
    return {
        "another run's subject": publish(f"nexus.run.{other}.status"),
        "what only core-api says on the run's own subjects": publish(f"nexus.run.{own}.approval_decided"),
        "another run's plan": publish(f"nexus.cmd.core.plan_children.{other}"),
        "a command": publish("nexus.cmd.worker.launch_run"),
        "the JetStream API": publish(f"$JS.API.STREAM.PURGE.{RUNS_STREAM}"),
        "a wildcard": publish(f"nexus.run.{own}.*"),
        "a full wildcard": publish("nexus.run.>"),
        "a space smuggling a second subject": publish(f"nexus.run.{own}.log nexus.run.{other}.status"),
        "an empty token": publish(f"nexus.run..{own}"),
        "a subject not ASCII": raw(f"nexus.run.{own}.lög".encode(), b"Nats-Msg-Id: a\r\n"),
        "a CRLF smuggling a header": raw(f"nexus.run.{own}.log".encode(), b"Nats-Msg-Id: a\r\nNats-Rollup: sub\r\n"),
        "a header runs never send": publish(f"nexus.run.{own}.log", headers={**msg, "Nats-Expected-Stream": "X"}),
        "no message id": publish(f"nexus.run.{own}.log", headers={}),
        "a length past any publish": struct.pack(">I", 0xFFFFFFFF) + b"x" * 100,
        "a frame shorter than its header": frames.LENGTH.pack(3) + b"abc",
        "a subject longer than its frame": frames.LENGTH.pack(8) + frames.REQUEST.pack(1, 200, 0),
    }


@pytest.mark.parametrize("attack", list(attacks("x", "y")))
async def test_a_run_asking_what_its_credential_refuses_loses_its_relay_and_nothing_is_published(
    worker_nc, looker, attack: str
) -> None:
    own, other = f"run_{uuid.uuid4().hex[:12]}", f"run_{uuid.uuid4().hex[:12]}"
    reader, writer = await child_end(worker_nc, own)
    bystander_reader, bystander = await child_end(worker_nc, other)
    writer.write(publish(f"nexus.run.{own}.log") + attacks(own, other)[attack])
    outcomes = await until_closed(reader)
    assert outcomes in ([], [frames.ACK])  # the legitimate publish before it may have been answered
    assert await stored(looker, f"nexus.run.{other}.>") == 0
    assert await stored(looker, f"nexus.run.{own}.approval_decided") == 0
    # The worker's loop lives on, and the other run's relay was never touched.
    bystander.write(publish(f"nexus.run.{other}.log"))
    got = frames.Frames(1 << 20).feed(await asyncio.wait_for(bystander_reader.read(65536), 10))
    assert [frames.REPLY.unpack_from(b)[1] for b in got] == [frames.ACK]
    assert await stored(looker, f"nexus.run.{other}.log") == 1
    bystander.close()


async def test_a_run_that_floods_the_relay_loses_it(worker_nc, looker) -> None:
    own = f"run_{uuid.uuid4().hex[:12]}"
    reader, writer = await child_end(worker_nc, own)
    writer.write(b"".join(publish(f"nexus.run.{own}.log") for _ in range(MAX_OUTSTANDING + 50)))
    await until_closed(reader)
    assert await stored(looker, f"nexus.run.{own}.log") <= MAX_OUTSTANDING


async def test_a_publish_the_run_may_make_is_published_with_its_message_id(worker_nc, looker) -> None:
    own = f"run_{uuid.uuid4().hex[:12]}"
    reader, writer = await child_end(worker_nc, own)
    writer.write(publish(f"nexus.run.{own}.log", msg_id="same") + publish(f"nexus.run.{own}.log", msg_id="same"))
    got = frames.Frames(1 << 20)
    bodies: list[bytes] = []
    while len(bodies) < 2:
        bodies += got.feed(await asyncio.wait_for(reader.read(65536), 10))
    assert [frames.REPLY.unpack_from(b)[1] for b in bodies] == [frames.ACK, frames.ACK]
    acks = [json.loads(b[frames.REPLY.size :]) for b in bodies]
    assert sorted(bool(a.get("duplicate")) for a in acks) == [False, True]  # JetStream's dedupe, by the run's id
    assert await stored(looker, f"nexus.run.{own}.log") == 1
    writer.close()

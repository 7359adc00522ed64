"""Poison messages cannot poison: dead letters always fit, commands are decoded as their subject
says and within the HTTP limits, and a consumer loop that dies is restarted and reported down."""

import asyncio
import hashlib
import uuid
from dataclasses import dataclass

import msgspec
import pytest
from prometheus_client import REGISTRY

from nexus.events.bus import Publisher, connect, ensure_streams
from nexus.events.catalog import RUNS_STREAM
from nexus.events.consumer import LOOPS, Delivery, consume, decode_message, supervised
from nexus.events.envelope import encode, make_envelope
from nexus.events.payloads import CreateGoal, DecideApproval, RunLog, RunStatusChanged
from tests.events.test_consumer import _collect, _dead_letters


@dataclass
class _Msg:
    subject: str
    data: bytes


def _body(type_: str, data) -> bytes:
    return encode(make_envelope(type_, data, source="test"))


def test_a_command_is_decoded_as_its_subject_says() -> None:
    body = _body("core.create_goal", CreateGoal(title="a goal"))
    _, cmd = decode_message(_Msg("nexus.cmd.core.create_goal", body))
    assert cmd == CreateGoal(title="a goal")
    with pytest.raises(ValueError, match="disagrees with subject nexus.cmd.core.decide_approval"):
        decode_message(_Msg("nexus.cmd.core.decide_approval", body))


def test_commands_over_the_bus_have_the_http_field_limits() -> None:
    huge = _body("core.create_goal", CreateGoal(title="x" * 950_000))
    with pytest.raises(msgspec.ValidationError, match=r"\$\.title"):
        decode_message(_Msg("nexus.cmd.core.create_goal", huge))
    with pytest.raises(msgspec.ValidationError, match=r"\$\.approval_id"):
        decode_message(
            _Msg(
                "nexus.cmd.core.decide_approval",
                _body("core.decide_approval", DecideApproval(approval_id="", decision="approved")),
            )
        )


def test_a_message_over_the_size_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds the limit"):
        decode_message(_Msg("nexus.cmd.core.create_goal", b" " * 1_048_577))


@pytest.mark.infra
async def test_a_dead_letter_of_a_large_escaped_message_fits_and_the_consumer_lives_on(nats_url, nats_creds) -> None:
    """A body of quotes doubles when escaped again inside the dead letter: it is cut to fit, with its
    size and sha256, and the consumer handles the next message."""
    nc = await connect(nats_url, "test-poison", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    run_id = f"run_{uuid.uuid4().hex}"
    subject = f"nexus.run.{run_id}.log"
    poison = _body(
        "run.status", RunStatusChanged(status="running", reason='"' * 400_000)
    )  # on the log subject: wrong type
    assert len(poison) > 700_000
    await js.publish(subject, poison)
    await Publisher(js, "test").publish("run.log", RunLog(message="after the poison"), run_id=run_id)

    async def ok(_: Delivery) -> None:
        return None

    seen = await _collect(js, run_id, ok, until=1)
    assert [d.payload.message for d in seen] == ["after the poison"]
    (letter,) = await _dead_letters(js, subject)
    assert "disagrees with subject" in letter.reason
    assert letter.truncated and letter.body_bytes == len(poison)
    assert letter.body_sha256 == hashlib.sha256(poison).hexdigest()
    assert poison.decode().startswith(letter.body)
    await nc.drain()


async def test_a_loop_that_dies_is_restarted_and_reported_down_meanwhile() -> None:
    stop = asyncio.Event()
    runs, down_while_restarting = [], []

    async def loop() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("the loop broke")
        down_while_restarting.append(LOOPS.healthy())
        await stop.wait()

    task = asyncio.create_task(supervised("test-loop", loop, stop))
    await asyncio.wait_for(_until(lambda: "test-loop" in LOOPS.down), 10)
    assert not LOOPS.healthy() and "the loop broke" in LOOPS.down["test-loop"]
    await asyncio.wait_for(_until(lambda: len(runs) == 2), 10)
    assert LOOPS.healthy() and down_while_restarting == [True]
    stop.set()
    await asyncio.wait_for(task, 10)
    assert LOOPS.restarts["test-loop"] == 1
    assert REGISTRY.get_sample_value("nexus_loop_restarts_total", {"loop": "test-loop"}) == 1  # the overview's panel


async def _until(cond) -> None:
    while not cond():
        await asyncio.sleep(0.01)


@pytest.mark.infra
async def test_consume_survives_its_fetch_loop_raising(nats_url, nats_creds, monkeypatch) -> None:
    """consume() is supervised: a loop that dies (here: the subscription cannot be made once) is restarted."""
    nc = await connect(nats_url, "test-poison-2", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    run_id = f"run_{uuid.uuid4().hex}"
    await Publisher(js, "test").publish("run.log", RunLog(message="hello"), run_id=run_id)
    real = js.pull_subscribe
    calls = []

    async def flaky(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("not now")
        return await real(*a, **kw)

    monkeypatch.setattr(js, "pull_subscribe", flaky)
    got: list[str] = []
    stop = asyncio.Event()

    async def handler(d: Delivery) -> None:
        got.append(d.payload.message)
        stop.set()

    task = asyncio.create_task(
        consume(
            js,
            stream=RUNS_STREAM,
            durable=f"f-{uuid.uuid4().hex[:8]}",
            subject=f"nexus.run.{run_id}.>",
            handler=handler,
            stop=stop,
        )
    )
    await asyncio.wait_for(task, 30)
    assert got == ["hello"] and len(calls) == 2
    await nc.drain()


@pytest.mark.infra
async def test_a_deleted_durable_consumer_is_made_again_and_the_restart_counted(nats_url, nats_creds) -> None:
    """Someone deletes a loop's durable consumer: fetching through it would fail forever, leaving the service
    deaf while it looks healthy. The loop ends, its supervisor starts it again (counted in
    nexus_loop_restarts_total), the durable is created anew and what is published next is handled."""
    nc = await connect(nats_url, "test-poison-3", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    run_id, durable = f"run_{uuid.uuid4().hex}", f"g-{uuid.uuid4().hex[:8]}"
    pub = Publisher(js, "test")
    got: list[str] = []
    stop = asyncio.Event()

    async def handler(d: Delivery) -> None:
        got.append(d.payload.message)
        if "after" in got:
            stop.set()

    task = asyncio.create_task(
        consume(js, stream=RUNS_STREAM, durable=durable, subject=f"nexus.run.{run_id}.>", handler=handler, stop=stop)
    )
    try:
        await pub.publish("run.log", RunLog(message="before"), run_id=run_id)
        await asyncio.wait_for(_until(lambda: got == ["before"]), 30)
        await js.delete_consumer(RUNS_STREAM, durable)
        await pub.publish("run.log", RunLog(message="after"), run_id=run_id)
        await asyncio.wait_for(task, 30)
    finally:
        stop.set()
        await nc.drain()
    assert got[-1] == "after" and set(got) == {"before", "after"}  # the new durable starts from the stream's start
    assert REGISTRY.get_sample_value("nexus_loop_restarts_total", {"loop": durable}) == 1
    assert LOOPS.healthy()


def test_what_no_store_can_keep_is_refused_by_field_as_over_http() -> None:
    """A NUL in a command's or an event's string and an integer past 64 bits anywhere are refused at
    decoding, naming the field; a run's own events may carry a NUL (what a command printed)."""
    goal = _body("core.create_goal", CreateGoal(title="a\x00goal"))
    with pytest.raises(ValueError, match=r"NUL character cannot be stored \(at `\$\.title`\)"):
        decode_message(_Msg("nexus.cmd.core.create_goal", goal))
    wide = _body("run.status", RunStatusChanged(status="running", attempt=2**64 + 1))
    with pytest.raises(ValueError, match=r"outside the signed 64-bit range cannot be stored \(at `\$\.attempt`\)"):
        decode_message(_Msg("nexus.run.run_1.status", wide))
    _, log = decode_message(_Msg("nexus.run.run_1.log", _body("run.log", RunLog(message="printed \x00"))))
    assert log.message == "printed \x00"

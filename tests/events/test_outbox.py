"""An Outbox holds what a step publishes and sends it together (real JetStream): in the order it was
held, on the stream in that order, one wait for all of the acks; one that the bus refuses does not keep
the others from it, and is raised once they have settled."""

import uuid

import msgspec
import nats.errors
import pytest

from nexus.events.bus import PUBLISHED, Outbox, Publisher, connect, ensure_streams
from nexus.events.catalog import RUNS_STREAM
from nexus.events.envelope import decode_raw
from nexus.events.payloads import Heartbeat, RunLog

pytestmark = pytest.mark.infra


@pytest.fixture
async def js(nats_url, nats_creds):
    nc = await connect(nats_url, "test-outbox", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    yield js
    await nc.drain()


async def _logged(js, run_id: str, n: int) -> list[str]:
    """The run's log lines, in the stream's order."""
    sub = await js.subscribe(f"nexus.run.{run_id}.log", stream=RUNS_STREAM, ordered_consumer=True)
    try:
        return [_message(await sub.next_msg(timeout=10)) for _ in range(n)]
    finally:
        await sub.unsubscribe()


def _message(msg) -> str:
    return msgspec.json.decode(decode_raw(msg.data).data)["message"]


async def test_held_messages_go_out_in_order_with_one_wait(js) -> None:
    run_id = f"run_{uuid.uuid4().hex[:10]}"
    outbox = Outbox(Publisher(js, "tests"))
    lines = [f"line {i}" for i in range(20)]
    before = (PUBLISHED.messages, PUBLISHED.waits)
    envelopes = [await outbox.publish("run.log", RunLog(message=m), run_id=run_id) for m in lines]
    assert (PUBLISHED.messages, PUBLISHED.waits) == before  # held: nothing sent yet
    await outbox.release()
    assert (PUBLISHED.messages - before[0], PUBLISHED.waits - before[1]) == (20, 1)
    assert outbox.held == []
    assert await _logged(js, run_id, 20) == lines
    # Each went out with the envelope id `publish` returned: JetStream's dedupe id.
    sub = await js.subscribe(f"nexus.run.{run_id}.log", stream=RUNS_STREAM, ordered_consumer=True)
    first = await sub.next_msg(timeout=10)
    assert first.headers["Nats-Msg-Id"] == envelopes[0].id
    await sub.unsubscribe()

    # A publisher awaited alone waits once per message.
    before = PUBLISHED.waits
    for m in ("a", "b"):
        await Publisher(js, "tests").publish("run.log", RunLog(message=m), run_id=run_id)
    assert PUBLISHED.waits - before == 2


async def test_a_refused_message_does_not_hold_back_the_others(js) -> None:
    run_id = f"run_{uuid.uuid4().hex[:10]}"

    class RefusesSecond(Publisher):
        async def publish(self, type_, data, **options):
            if data.message == "second":
                raise nats.errors.TimeoutError
            return await super().publish(type_, data, **options)

    outbox = Outbox(RefusesSecond(js, "tests"))
    for m in ("first", "second", "third"):
        await outbox.publish("run.log", RunLog(message=m), run_id=run_id)
    with pytest.raises(nats.errors.TimeoutError):
        await outbox.release()
    assert await _logged(js, run_id, 2) == ["first", "third"]


async def test_a_payload_not_of_its_type_is_refused_when_held(js) -> None:
    outbox = Outbox(Publisher(js, "tests"))
    with pytest.raises(TypeError):
        await outbox.publish("run.log", Heartbeat(), run_id="run_x")
    assert outbox.held == []

"""board-sync's FastStream handlers on the test broker: what each message makes the syncer do, and
the settling rules (outage → held and retried in order; refused for good → dead letter)."""

import asyncio
import logging
import re

import pytest
from faststream.nats import JStream, NatsBroker, TestNatsBroker

from nexus.board_sync.handlers import patiently, register
from nexus.board_sync.providers.base import AuthFailed, ProviderError, Unavailable
from nexus.events.consumer import Delivery
from nexus.events.envelope import encode, make_envelope
from nexus.events.payloads import BoardExternalChanged, RunChanged, TaskChanged


class RecordingSyncer:
    def __init__(self, fail_first: int = 0, error: Exception | None = None) -> None:
        self.synced: list[str] = []
        self.external: list[str] = []
        self.fail_first = fail_first
        self.error = error

    async def sync_task(self, task_id: str, *, changed_at: float | None = None) -> int:
        if self.error is not None and not isinstance(self.error, AuthFailed):
            raise self.error
        if self.fail_first:
            self.fail_first -= 1
            raise self.error or Unavailable("plane is down", retry_after_s=0.01)
        self.synced.append(task_id)
        return 1

    async def on_external(self, change: BoardExternalChanged) -> str:
        self.external.append(change.item_id)
        return "echo"


def env(type_: str, payload) -> bytes:
    return encode(make_envelope(type_, payload, source="test"))


async def run_with(syncer: RecordingSyncer, messages: list[tuple[str, bytes]]) -> list[dict]:
    broker = NatsBroker()
    dead: list[dict] = []

    @broker.subscriber("nexus.dlq.>", stream=JStream("NEXUS_DLQ", declare=False))
    async def dlq(m: dict) -> None:
        dead.append(m)

    register(broker, syncer, asyncio.Event(), backoff_s=0.01, max_deliver=5)  # type: ignore[arg-type]  # a recording syncer stands in
    async with TestNatsBroker(broker) as tb:
        for subject, body in messages:
            await tb.publish(body, subject, stream="NEXUS_EVENTS")
    return dead


async def test_task_and_run_events_sync_their_task_and_webhooks_go_to_on_external():
    s = RecordingSyncer()
    dead = await run_with(
        s,
        [
            ("nexus.evt.task.created", env("task.created", TaskChanged(task_id="t1", status="ready"))),
            (
                "nexus.evt.run.succeeded",
                env("run.succeeded", RunChanged(run_id="r1", task_id="t2", agent_id="a", status="succeeded")),
            ),
            (
                "nexus.evt.board.external_changed",
                env(
                    "board.external_changed",
                    BoardExternalChanged(provider="plane", delivery_id="d1", event="issue", item_id="i1"),
                ),
            ),
        ],
    )
    assert s.synced == ["t1", "t2"] and s.external == ["i1"] and dead == []


async def test_an_outage_holds_the_change_until_the_provider_is_back():
    s = RecordingSyncer(fail_first=3)
    dead = await run_with(
        s,
        [
            ("nexus.evt.task.created", env("task.created", TaskChanged(task_id="t1", status="ready"))),
            (
                "nexus.evt.task.status_changed",
                env("task.status_changed", TaskChanged(task_id="t1", status="in_progress")),
            ),
        ],
    )
    assert s.synced == ["t1", "t1"] and dead == []


@pytest.mark.parametrize("body", [b"not json", None])
async def test_undecodable_or_refused_changes_are_dead_lettered(body):
    s = RecordingSyncer(error=ProviderError("plane: 400 on POST"))
    raw = body or env("task.created", TaskChanged(task_id="t1", status="ready"))
    dead = await run_with(s, [("nexus.evt.task.created", raw)])
    assert len(dead) == 1 and dead[0]["data"]["original_subject"] == "nexus.evt.task.created"
    assert ("undecodable" if body else "rejected") in dead[0]["data"]["reason"]


async def test_a_refused_credential_is_tried_ever_more_seldom_and_said_plainly(caplog):
    s = RecordingSyncer(fail_first=5, error=AuthFailed("plane: credential refused (401) on GET /work-items/"))
    with caplog.at_level(logging.INFO, logger="nexus.board_sync.handlers"):
        dead = await run_with(
            s, [("nexus.evt.task.created", env("task.created", TaskChanged(task_id="t1", status="ready")))]
        )
    held = [r for r in caplog.records if "holding" in r.getMessage()]
    waits = [float(re.findall(r"for ([0-9.]+)s", r.getMessage())[0]) for r in held]
    assert waits == [0.01, 0.02, 0.04, 0.08, 0.16]  # not every 0.01 s for as long as the token stays revoked
    assert all(r.levelno == logging.ERROR and "credential" in r.getMessage() for r in held)
    assert s.synced == ["t1"] and dead == []


class Held:
    """A JetStream message as the handler sees it: counts 'still working' signals."""

    def __init__(self) -> None:
        self.beats = 0

    async def in_progress(self) -> None:
        self.beats += 1


async def test_a_slow_provider_call_keeps_telling_jetstream_the_message_is_being_worked_on():
    msg, answered = Held(), asyncio.Event()

    async def slow_call() -> str:  # a provider answering slowly, or retrying a long Retry-After
        await answered.wait()
        return "done"

    raw = make_envelope("task.created", TaskChanged(task_id="t1", status="ready"), source="test")
    d = Delivery(raw, raw.data, "nexus.evt.task.created", 1, 1, msg)  # type: ignore[arg-type]  # stands in
    call = asyncio.create_task(patiently(asyncio.Event(), 0.01, d, slow_call, beat_s=0.01))
    for _ in range(500):  # before: nothing was said during a call, so JetStream delivered it again
        if msg.beats >= 3:
            break
        await asyncio.sleep(0.01)
    answered.set()
    assert await call == "done" and msg.beats >= 3


async def test_a_try_that_never_returns_is_cut_and_made_again():
    """The beat above would hold a message for ever behind a call that never returns (a database that takes
    the request and never answers): one try is bounded, and a try past it is held like an outage."""
    tries = 0

    async def hangs_once() -> str:
        nonlocal tries
        tries += 1
        if tries == 1:
            await asyncio.Event().wait()  # never answered
        return "done"

    raw = make_envelope("task.created", TaskChanged(task_id="t1", status="ready"), source="test")
    d = Delivery(raw, raw.data, "nexus.evt.task.created", 1, 1, Held())  # type: ignore[arg-type]  # stands in
    # before: waited for ever (the test's own bound ends it)
    assert await asyncio.wait_for(patiently(asyncio.Event(), 0.01, d, hangs_once, beat_s=0.01, try_s=0.2), 30) == "done"
    assert tries == 2

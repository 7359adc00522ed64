"""An alert is queued once per chat even when handling its event fails half-way and the event is
delivered again (a crash, a bus hiccup): nothing lost, nothing twice. Real JetStream buckets."""

import asyncio
import uuid

import msgspec
import pytest
from nats.js.kv import KeyValue

from nexus.domain.ids import new_ulid
from nexus.events.bus import connect
from nexus.events.consumer import Delivery, Poison
from nexus.events.envelope import RawEnvelope
from nexus.events.payloads import TaskChanged
from nexus.telegram_gateway.alerts import NO_ANSWER_TRIES, Alerts
from nexus.telegram_gateway.outbox import Outbox, Outgoing
from nexus.telegram_gateway.store import ChatStore, open_bucket
from tests.telegram_gateway.test_outbox import _until

pytestmark = pytest.mark.infra


class FailsOnce:
    """A bucket whose first write for chat 2 fails, as when the process dies or the bus drops then."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv, self.failed = kv, False

    def __getattr__(self, name: str):
        return getattr(self.kv, name)

    def _first_for_chat_2(self, key: str) -> None:
        if key.startswith("2.") and not self.failed:
            self.failed = True
            raise ConnectionError("the bus went away")

    async def create(self, key: str, value: bytes):
        self._first_for_chat_2(key)
        return await self.kv.create(key, value)

    async def put(self, key: str, value: bytes):
        self._first_for_chat_2(key)
        return await self.kv.put(key, value)


async def test_an_event_handled_again_after_failing_half_way_alerts_each_chat_once(
    nats_url: str, nats_creds: str
) -> None:
    nc = await connect(nats_url, "test-alerts", creds=nats_creds)
    js = nc.jetstream()
    tag = uuid.uuid4().hex[:8]
    store = ChatStore(await open_bucket(js, f"chat_{tag}"), await open_bucket(js, f"marks_{tag}"))
    sent: list[tuple[int, str]] = []

    async def deliver(m: Outgoing) -> None:
        sent.append((m.chat_id, m.text))

    outbox = Outbox(FailsOnce(await open_bucket(js, f"outbox_{tag}")), deliver, retry_s=0.01, sent=store.marks)  # type: ignore[arg-type]
    alerts = Alerts(core=None, store=store, outbox=outbox)  # type: ignore[arg-type]  # task alerts ask core nothing
    for chat in (1, 2):
        await store.subscribe(chat, "goal_x")
    event = TaskChanged(task_id="task_x", status="ready", title="Write the page", goal_id="goal_x")
    delivery = Delivery(
        RawEnvelope(
            id=new_ulid(), type="task.created", occurred_at="", source="t", data=msgspec.Raw(msgspec.json.encode(event))
        ),
        event,
        "nexus.evt.task.created",
        1,
        1,
    )
    with pytest.raises(ConnectionError):
        await alerts.on_task_created(delivery)  # chat 1 queued, chat 2 not: the consumer will deliver it again
    await alerts.on_task_created(delivery)
    await alerts.on_task_created(delivery)  # and once more after it was handled: nothing new
    for chat in (1, 2):
        await outbox.put(Outgoing(chat_id=chat, text="after"))  # each chat's sender sends in order
    await _until(lambda: sum(text == "after" for _, text in sent) == 2)
    await outbox.stop()
    planned = sorted(chat for chat, text in sent if "Write the page" in text)
    assert planned == [1, 2]
    await nc.drain()


class AwayThenBack:
    """core-api restarting: the first queries go unanswered, then it answers."""

    def __init__(self, unanswered: int, answer: dict | Exception) -> None:
        self.unanswered, self.answer, self.asked = unanswered, answer, 0

    async def query(self, name: str, principal=None, **args):
        from nexus.telegram_gateway.core import CoreError

        self.asked += 1
        if self.asked <= self.unanswered:
            raise CoreError("core-api did not answer; try again in a moment", unreachable=True)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_an_alert_waits_out_core_api_being_away_instead_of_being_dropped(nats_url: str, nats_creds: str) -> None:
    """More unanswered queries than the consumer's deliveries (five): handled by the subscriber's own
    handler, the alert still goes out once core-api answers — it is not dead-lettered and lost."""
    from nexus.events.payloads import ApprovalRequested

    nc = await connect(nats_url, "test-alerts", creds=nats_creds)
    js = nc.jetstream()
    tag = uuid.uuid4().hex[:8]
    store = ChatStore(await open_bucket(js, f"chat_{tag}"), await open_bucket(js, f"marks_{tag}"))
    sent: list[tuple[int, str]] = []

    async def deliver(m: Outgoing) -> None:
        sent.append((m.chat_id, m.text))

    outbox = Outbox(await open_bucket(js, f"outbox_{tag}"), deliver, retry_s=0.01, sent=store.marks)
    approval = {"id": "apr_x", "run_id": "run_x", "agent": "asker", "action": "run_command", "detail": "touch x"}
    core = AwayThenBack(8, approval)
    alerts = Alerts(core=core, store=store, outbox=outbox, wait_s=0.01)  # type: ignore[arg-type]  # core: its query only
    await store.subscribe(1, None)  # everything
    event = ApprovalRequested(approval_id="apr_x", run_id="run_x", action="run_command", detail="touch x")
    delivery = Delivery(
        RawEnvelope(
            id=new_ulid(),
            type="approval.requested",
            occurred_at="",
            source="t",
            data=msgspec.Raw(msgspec.json.encode(event)),
        ),
        event,
        "nexus.evt.approval.requested",
        1,
        1,
    )
    await alerts._patiently(alerts.on_approval)(delivery)
    await _until(lambda: any("apr_x" in text for _, text in sent))
    await outbox.stop()
    await nc.drain()
    assert core.asked == 9 and [c for c, text in sent if "apr_x" in text] == [1]


async def test_an_answer_that_is_no_is_not_waited_out(nats_url: str, nats_creds: str) -> None:
    """Only silence is an outage: core-api answering that it knows no such approval (a forged or stale
    event) is poison after a few more asks — dead-lettered with that answer as its reason, not held for ever."""
    from nexus.events.payloads import ApprovalRequested
    from nexus.telegram_gateway.core import CoreError

    nc = await connect(nats_url, "test-alerts", creds=nats_creds)
    js = nc.jetstream()
    tag = uuid.uuid4().hex[:8]
    store = ChatStore(await open_bucket(js, f"chat_{tag}"), await open_bucket(js, f"marks_{tag}"))
    core = AwayThenBack(1, CoreError("approval apr_gone not found"))
    alerts = Alerts(core=core, store=store, outbox=None, wait_s=0.01)  # type: ignore[arg-type]  # core: its query only
    event = ApprovalRequested(approval_id="apr_gone", run_id="run_x", action="run_command", detail="x")
    raw = RawEnvelope(
        id=new_ulid(),
        type="approval.requested",
        occurred_at="",
        source="t",
        data=msgspec.Raw(msgspec.json.encode(event)),
    )
    with pytest.raises(Poison, match="core-api answered: approval apr_gone not found"):
        await asyncio.wait_for(
            alerts._patiently(alerts.on_approval)(Delivery(raw, event, "nexus.evt.approval.requested", 1, 1)), 30
        )
    assert core.asked == 2 + NO_ANSWER_TRIES  # once unanswered (waited out), then answered no until poison
    await nc.drain()


async def test_a_try_that_never_returns_is_cut_and_made_again() -> None:
    """A query or a write that never returns must not hold the alert's consumer for ever: the try is cut
    and made again (here the second try finds the approval and alerts nobody: no chat follows it)."""
    from nexus.events.payloads import ApprovalRequested

    class HangsOnce:
        asked = 0

        async def query(self, name: str, **params: object) -> dict:
            self.asked += 1
            if self.asked == 1:
                await asyncio.Event().wait()  # core-api took the request and never answered
            return {"id": "apr_x", "run_id": "run_x", "action": "run_command", "goal_id": None}

    class NoChats:
        async def chats_for(self, goal_id: str | None) -> list[int]:
            return []

    core = HangsOnce()
    alerts = Alerts(core=core, store=NoChats(), outbox=None, wait_s=0.01, try_s=0.2)  # type: ignore[arg-type]
    event = ApprovalRequested(approval_id="apr_x", run_id="run_x", action="run_command", detail="x")
    raw = RawEnvelope(
        id=new_ulid(),
        type="approval.requested",
        occurred_at="",
        source="t",
        data=msgspec.Raw(msgspec.json.encode(event)),
    )
    # before: waited for ever (the test's own bound ends it)
    await asyncio.wait_for(
        alerts._patiently(alerts.on_approval)(Delivery(raw, event, "nexus.evt.approval.requested", 1, 1)), 30
    )
    assert core.asked == 2

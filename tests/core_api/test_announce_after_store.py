"""What core-api announces while it ingests a run's events is published only once the state it
announces is stored (real FerretDB and NATS): a reader woken by the event — the board re-reading its
lanes on an approval's nudge, a lead's alert — finds the run as the event says, never the step before.
The witness wraps the app's real publisher and reads the database at the moment each event goes out."""

import dataclasses

import pytest

from nexus.core_api.runs.ingest import ingest_group
from nexus.db import run_events
from nexus.db.documents import Run
from nexus.domain.ids import new_id
from nexus.events import payloads as p
from nexus.events.bus import Publisher
from nexus.events.catalog import spec
from nexus.events.consumer import Delivery
from nexus.events.envelope import decode_raw, encode, make_envelope
from tests.core_api.conftest import in_app, new_run

pytestmark = pytest.mark.infra


class Witness(Publisher):
    """The real publisher; before each event goes out, what the database holds of its run."""

    def __init__(self, publisher: Publisher) -> None:
        super().__init__(publisher.js, publisher.source)
        self.publisher = publisher
        self.seen: list[tuple[str, str, int]] = []  # (type, the run's stored status, its stored events)

    async def publish(self, type_: str, data, **options):
        run_id = getattr(data, "run_id", None)
        if run_id is not None:
            run = await Run.get(run_id)
            self.seen.append((type_, run.status if run else "", await run_events.count(run_id)))
        return await self.publisher.publish(type_, data, **options)


def delivery(run_id: str, type_: str, data, seq: int) -> Delivery:
    env = decode_raw(encode(make_envelope(type_, data, source="agent-runner", correlation_id=run_id)))
    return Delivery(env, data, spec(type_).subject_for(run_id=run_id), 1, seq)


def an_ask(run: dict) -> p.ApprovalRequested:
    """What a run's runner sends when its agent's command needs a lead's approval."""
    return p.ApprovalRequested(
        approval_id=new_id("apr"),
        run_id=run["id"],
        action="command:rm",
        detail="rm -rf build",
        session_id=run["session_id"],
    )


async def test_an_approval_is_announced_once_its_run_is_stored_waiting(client, app) -> None:
    run = await new_run(client)
    run_id = run["id"]
    witness = Witness(app.state.ctx.publisher)
    ctx = dataclasses.replace(app.state.ctx, publisher=witness)
    asked = an_ask(run)
    # The runner asks, then reports waiting_approval; the consumer's fetch may end between the two.
    await in_app(
        client,
        ingest_group,
        ctx,
        [
            delivery(run_id, "run.status", p.RunStatusChanged(status="running"), 1),
            delivery(run_id, "run.approval_requested", asked, 2),
        ],
    )
    assert [s for s in witness.seen if s[0] == "approval.requested"] == []  # the run is not stored as waiting yet
    await in_app(
        client, ingest_group, ctx, [delivery(run_id, "run.status", p.RunStatusChanged(status="waiting_approval"), 3)]
    )
    nudges = [s for s in witness.seen if s[0] == "approval.requested"]
    assert [status for _, status, _ in nudges] == ["waiting_approval"]
    assert (await client.get(f"/v1/approvals/{asked.approval_id}")).json()["status"] == "pending"

    # Both in one fetch: the same, one nudge, after the run is stored waiting.
    again = p.ApprovalRequested(
        approval_id=new_id("apr"), run_id=run_id, action="command:ls", session_id=run["session_id"]
    )
    await in_app(
        client,
        ingest_group,
        ctx,
        [
            delivery(run_id, "run.status", p.RunStatusChanged(status="running"), 4),
            delivery(run_id, "run.approval_requested", again, 5),
            delivery(run_id, "run.status", p.RunStatusChanged(status="waiting_approval"), 6),
        ],
    )
    nudges = [s for s in witness.seen if s[0] == "approval.requested"]
    assert [status for _, status, _ in nudges] == [
        "waiting_approval"
    ] * 3  # the first again (deduped by its id), the new one


async def test_a_runs_end_is_announced_after_the_rest_of_its_batch_is_stored(client, app) -> None:
    run = await new_run(client)
    run_id = run["id"]
    witness = Witness(app.state.ctx.publisher)
    ctx = dataclasses.replace(app.state.ctx, publisher=witness)
    batch = [
        delivery(run_id, "run.status", p.RunStatusChanged(status="running"), 1),
        delivery(run_id, "run.log", p.RunLog(message="working"), 2),
        delivery(run_id, "run.status", p.RunStatusChanged(status="succeeded", summary="done"), 3),
        delivery(run_id, "run.log", p.RunLog(message="after the verdict"), 4),
    ]
    await in_app(client, ingest_group, ctx, batch)
    ends = [s for s in witness.seen if s[0] == "run.succeeded"]
    assert ends == [("run.succeeded", "succeeded", len(batch))]  # every event of the batch stored before it
    assert [e.stream_seq for e in await in_app(client, run_events.events_of, run_id)] == [1, 2, 3, 4]

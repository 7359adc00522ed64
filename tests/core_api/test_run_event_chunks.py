"""A run's events are stored as one chunk per run per ingested batch (real FerretDB): each event is
kept once whatever JetStream hands out again — the same batch, the batch cut another way, one event
at a time after a failed group — and readers get exactly the events, in stream order, as before."""

import pytest

from nexus.core_api.runs.ingest import handle_run_event, ingest_group
from nexus.db import run_events
from nexus.domain.ledger import seal
from nexus.domain.sessions import NoteChange
from nexus.events import payloads as p
from nexus.events.catalog import spec
from nexus.events.consumer import Delivery
from nexus.events.envelope import decode_raw, encode, make_envelope
from tests.core_api.conftest import in_app, new_run

pytestmark = pytest.mark.infra


def delivery(run_id: str, type_: str, data, seq: int, deliveries: int = 1) -> Delivery:
    env = decode_raw(encode(make_envelope(type_, data, source="agent-runner", correlation_id=run_id)))
    return Delivery(env, data, spec(type_).subject_for(run_id=run_id), deliveries, seq)


def again(d: Delivery) -> Delivery:
    return Delivery(d.envelope, d.payload, d.subject, d.deliveries + 1, d.stream_seq)


async def stored_copies(client, run_id: str) -> list[int]:
    """Every stored copy's stream sequence, duplicates included."""
    chunks = await in_app(client, lambda: run_events.collection().find({"run_id": run_id}).to_list(None))
    return sorted(e["stream_seq"] for c in chunks for e in run_events._events(c))


async def test_each_event_is_stored_once_whatever_is_handed_out_again(client, app) -> None:
    run = await new_run(client)
    run_id, sid = run["id"], run["session_id"]
    ctx = app.state.ctx
    (change,) = seal([NoteChange(timestamp="2026-12-06T00:00:00Z", message="a note")])
    batch = [delivery(run_id, "run.log", p.RunLog(message=f"step {i}"), i) for i in (1, 2, 3)]
    batch += [
        delivery(run_id, "run.heartbeat", p.Heartbeat(step=4), 4),
        delivery(run_id, "run.note", p.SessionChanged(session_id=sid, change=change), 5),
        delivery(
            run_id,
            "run.llm",
            p.LLMCalled(step=6, provider="scripted", model="m", input_tokens=10, output_tokens=2, cost_usd=0.5),
            6,
        ),
    ]
    await in_app(client, ingest_group, ctx, batch[:3])
    assert await stored_copies(client, run_id) == [1, 2, 3]
    # The whole batch again (the first three were stored, the rest not): only the rest is written.
    await in_app(client, ingest_group, ctx, [again(d) for d in batch])
    assert await stored_copies(client, run_id) == [1, 2, 3, 5, 6]  # a heartbeat is not stored
    # One at a time (a group that failed), and the same batch whole once more: nothing new.
    for d in batch:
        await in_app(client, handle_run_event, ctx, again(again(d)))
    await in_app(client, ingest_group, ctx, [again(d) for d in batch])
    assert await stored_copies(client, run_id) == [1, 2, 3, 5, 6]

    events = await in_app(client, run_events.events_of, run_id)
    assert [(e.stream_seq, e.type, e.id) for e in events] == [
        (d.stream_seq, d.envelope.type, d.envelope.id) for d in batch if d.envelope.type != "run.heartbeat"
    ]
    assert events[0].data["message"] == "step 1" and events[-1].data["cost_usd"] == 0.5
    newest = await in_app(client, lambda: run_events.events_of(run_id, newest=2))
    assert [e.stream_seq for e in newest] == [5, 6]
    assert await in_app(client, run_events.of_type, [run_id], "run.llm") == [(run_id, events[-1].data)]
    # Model calls sit in chunks of their own: budgets read those, not the run's every event.
    chunks = await in_app(
        client, lambda: run_events.collection().find({"run_id": run_id, "types": "run.llm"}).to_list(None)
    )
    assert [[e["type"] for e in run_events._events(c)] for c in chunks] == [["run.llm"]]


async def test_readers_take_an_event_once_even_when_two_chunks_hold_it(client, app) -> None:
    """Two instances storing the same events at once (a reclaim racing a live replica) may both write them."""
    run = await new_run(client)
    run_id = run["id"]
    logs = [delivery(run_id, "run.log", p.RunLog(message=f"line {i}"), i) for i in (1, 2, 3)]
    docs = [
        run_events.event_doc(d.envelope.id, d.envelope.type, d.subject, d.stream_seq, d.envelope.occurred_at, d.payload)
        for d in logs
    ]
    chunks = run_events.chunk_docs(run_id, docs[:2]) + run_events.chunk_docs(run_id, docs[1:])
    await in_app(client, run_events.collection().insert_many, chunks)
    assert await stored_copies(client, run_id) == [1, 2, 2, 3]
    assert [e.stream_seq for e in await in_app(client, run_events.events_of, run_id)] == [1, 2, 3]
    assert [e.stream_seq for e in await in_app(client, lambda: run_events.events_of(run_id, newest=2))] == [2, 3]
    assert await in_app(client, run_events.count, run_id) == 3


async def test_a_batch_not_marked_as_handed_out_again_loses_nothing_to_a_stored_chunk(client, app) -> None:
    """A chunk whose id is taken (its first event was stored before) still stores the events that were not."""
    run = await new_run(client)
    run_id = run["id"]
    logs = [delivery(run_id, "run.log", p.RunLog(message=f"line {i}"), i) for i in (1, 2, 3)]
    await in_app(client, ingest_group, app.state.ctx, logs[:2])
    await in_app(client, ingest_group, app.state.ctx, logs)  # delivered "once" as far as the messages say
    assert await stored_copies(client, run_id) == [1, 2, 3]

"""core-api's consumer of every run's events: persist them, then let them move the run.

One run's events of a fetch are ingested together (`ingest_group`): the events and session changes
between two state-moving events are written with one insert_many each, heartbeats with one update;
status, runtime, session and approval events are applied one at a time, in stream order."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from nexus.core_api.approvals.service import on_requested
from nexus.core_api.context import Context
from nexus.core_api.ledger import record as ledger
from nexus.core_api.metrics import count_heartbeat, count_llm_call
from nexus.core_api.runs.known import known as _known
from nexus.core_api.sessions import service as sessions
from nexus.core_api.workflow import engine
from nexus.db.cache import cached_get
from nexus.db.documents import Run, RunEvent, SessionChangeRecord, now
from nexus.db.writes import update_document
from nexus.events import payloads as p
from nexus.events.consumer import Delivery

log = logging.getLogger("nexus.core_api.ingest")
# Events that move state: applied one by one, in order, after what came before them is stored.
STATEFUL = (p.RunStatusChanged, p.RuntimeChanged, p.SessionOpened, p.ApprovalRequested)
# A run's heartbeat is written at most this often (the worker also hears heartbeats on the bus itself).
HEARTBEAT_WRITE_EVERY_S = 1.0


Inserter = Callable[[Any, list[dict]], Awaitable[Any]]


class GroupCommit:
    """Inserts of the groups being ingested at the same time go out together: the first writer waits
    one turn of the loop for the others, then one insert_many per collection carries them all, the
    collections in the order a writer listed them (ledger records before the changes they witness)."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[int, Any, list[dict], Inserter]] = {}
        self.waiters: list[asyncio.Future] = []
        self.flusher: asyncio.Task | None = None

    async def insert(self, batches: list[tuple[Any, list[dict], Inserter]]) -> None:
        if not any(docs for _, docs, _ in batches):
            return
        for rank, (coll, docs, inserter) in enumerate(batches):
            if docs:
                self.pending.setdefault(coll.name, (rank, coll, [], inserter))[2].extend(docs)
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        await asyncio.sleep(0)
        while self.waiters:
            pending, waiters = self.pending, self.waiters
            self.pending, self.waiters = {}, []
            try:
                for _, coll, docs, inserter in sorted(pending.values(), key=lambda b: b[0]):
                    await inserter(coll, docs)
            except Exception as exc:  # noqa: BLE001 — every writer of the batch sees the failure and is retried
                for w in waiters:
                    if not w.done():
                        w.set_exception(exc)
            else:
                for w in waiters:
                    if not w.done():
                        w.set_result(None)


_commit = GroupCommit()
_heartbeats: dict[str, float] = {}


def _event_doc(run_id: str, d: Delivery) -> dict:
    return {
        "_id": d.envelope.id,
        "run_id": run_id,
        "type": d.envelope.type,
        "subject": d.subject,
        "stream_seq": d.stream_seq,
        "occurred_at": d.envelope.occurred_at,
        "data": msgspec.to_builtins(d.payload),
    }


async def _apply(ctx: Context, run_id: str, d: Delivery) -> None:
    match d.payload:
        case p.RunStatusChanged():
            await engine.on_status(ctx, run_id, d.payload, d.stream_seq)
        case p.RuntimeChanged():
            await engine.on_runtime(ctx, run_id, d.payload, d.stream_seq)
        case p.SessionOpened():
            await sessions.on_opened(run_id, d.payload, d.stream_seq)
        case p.ApprovalRequested():
            await on_requested(ctx, d.payload)


async def ingest_group(ctx: Context, deliveries: list[Delivery]) -> None:
    """One run's events, in stream order."""
    run_id = deliveries[0].subject.split(".")[2]
    if not await _known(run_id, deliveries[0].envelope.type):
        return
    events: list[Any] = []
    changes: list[Any] = []
    records: list[Any] = []
    opened_by: list[Any] = []
    heartbeat = False

    async def flush() -> None:
        await _commit.insert([(ledger.collection(), list(records), ledger.insert_records),
                              (RunEvent.get_pymongo_collection(), list(events), sessions.insert_new),
                              (SessionChangeRecord.get_pymongo_collection(), list(changes), sessions.insert_new)])
        for ev in opened_by:  # a change that outran its session's "opened"
            await sessions.ensure_session(run_id, ev)
        events.clear()
        changes.clear()
        records.clear()
        opened_by.clear()

    for d in deliveries:
        if isinstance(d.payload, p.LLMCalled) and (run := await cached_get(Run, run_id)) is not None:
            count_llm_call(
                run.agent_id,
                d.payload.provider,
                d.payload.model,
                d.payload.input_tokens,
                d.payload.output_tokens,
                d.payload.cost_usd,
            )
        if isinstance(d.payload, p.Heartbeat):
            count_heartbeat(run_id, d.payload.mailbox_depth, d.payload.mailbox_dropped)
            heartbeat = True  # liveness only: the stream keeps heartbeats; the database does not need them
            continue
        if isinstance(d.payload, STATEFUL):
            await flush()
            await _apply(ctx, run_id, d)
        elif isinstance(d.payload, p.SessionChanged):
            # Provenance: each ledger entry's hash as the run reported it, first report wins.
            records.append(ledger.record_doc(run_id, d.payload.attempt, d.payload.session_id, d.payload.change))
            changes.append(sessions.change_record(run_id, d.payload))
            if d.payload.change.seq == 0:
                opened_by.append(d.payload)
        events.append(_event_doc(run_id, d))
    await flush()
    if heartbeat and time.monotonic() - _heartbeats.get(run_id, 0.0) >= HEARTBEAT_WRITE_EVERY_S:
        _heartbeats[run_id] = time.monotonic()
        if len(_heartbeats) > 100_000:
            _heartbeats.clear()
        await update_document(Run, run_id, {"$set": {"last_heartbeat_at": now()}}, beside_versioned=True)


async def handle_run_event(ctx: Context, d: Delivery) -> None:
    await ingest_group(ctx, [d])

"""core-api's consumer of every run's events: persist them, then let them move the run.

One run's events of a fetch are ingested together (`ingest_group`): its events up to an approval are
stored as one chunk (nexus.db.run_events), their session changes and ledger records with one insert_many
each, its sessions' reports with the same group commit, heartbeats with one update; then its status and
runtime events move the run in ONE write. A session's report moves only its session, so it is no
barrier between the run's facts: stored with the events before the run is written, it costs the run no
write of its own. Approvals are applied one at a time, in stream order, after what came before them is
stored. What the group announces (domain events, commands) is published only once all of the group's
writes are stored (`Outbox`): a reader woken by an event always finds the state it announces."""

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nexus.core_api.approvals.service import announce_requested, on_requested
from nexus.core_api.context import Context
from nexus.core_api.ledger import record as ledger
from nexus.core_api.metrics import RUN_EVENTS_DROPPED, count_heartbeat, count_llm_call
from nexus.core_api.runs.known import agent_of
from nexus.core_api.runs.known import known as _known
from nexus.core_api.sessions import service as sessions
from nexus.core_api.workflow import engine
from nexus.db import run_events
from nexus.db.documents import Run, Session, SessionChangeRecord, now
from nexus.db.writes import update_document
from nexus.domain.json_types import JsonObject
from nexus.events import payloads as p
from nexus.events.bus import Outbox
from nexus.events.catalog import RUNS_STREAM
from nexus.events.consumer import Delivery

log = logging.getLogger("nexus.core_api.ingest")
# A run's status and runtime events: those of one fetch (up to any other state-moving event) are
# recorded as ONE write of the run (`engine.on_run_facts`), each transition's effects kept.
RUN_FACTS = (p.RunStatusChanged, p.RuntimeChanged)
# A run's heartbeat is written at most this often (the worker also hears heartbeats on the bus itself).
HEARTBEAT_WRITE_EVERY_S = 1.0
# Messages per fetch. A fetch's events are stored run by run (a chunk each, and its model calls' chunk),
# so a larger fetch is fewer, larger documents and fewer commands per event; the fetch ends as soon
# as the stream has no more, so a quiet stream is not waited on.
FETCH = 2048
# What always moves a run, however many events it sent: its status, its sessions' reports, its approvals.
UNCAPPED = (*RUN_FACTS, p.SessionOpened, p.ApprovalRequested)
_stored: dict[str, int] = {}  # events of each run this process stored or was handed again (`_room`)


def run_of(subject: str) -> str:
    """The run a run event's subject names: nexus.run.<run_id>.<kind>."""
    return subject.split(".")[2]


# How core-api's run-event consumer reads (nexus.events.consumer.consume): every run's group of a fetch
# is handled at once (`concurrency` = the fetch), so all of them join ONE group commit — a smaller bound
# cuts a fetch's inserts into several rounds, one after the other.
RUN_EVENTS_CONSUMER: dict[str, Any] = {
    "stream": RUNS_STREAM,
    "subject": "nexus.run.>",
    "batch": FETCH,
    "concurrency": FETCH,
    "partition": run_of,
    "max_ack_pending": 8000,
    "max_deliver": 20,  # a database restart must not dead-letter run events: they are retried for minutes
    "prefetch": True,
}


Inserter = Callable[[Any, list[JsonObject]], Awaitable[Any]]


class GroupCommit:
    """Inserts of the groups being ingested at the same time go out together: the first writer waits
    one turn of the loop for the others, then one insert_many per collection carries them all. A
    writer lists its collections in stages: a stage's inserts run at once, a stage starts when the
    one before is stored (ledger records before the changes they witness)."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[int, Any, list[JsonObject], Inserter]] = {}
        self.waiters: list[asyncio.Future[None]] = []
        self.flusher: asyncio.Task[None] | None = None

    async def insert(self, stages: list[list[tuple[Any, list[JsonObject], Inserter]]]) -> None:
        if not any(docs for stage in stages for _, docs, _ in stage):
            return
        for rank, stage in enumerate(stages):
            for coll, docs, inserter in stage:
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
                for rank in sorted({b[0] for b in pending.values()}):
                    await asyncio.gather(*(ins(coll, docs) for r, coll, docs, ins in pending.values() if r == rank))
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


async def _insert_session(doc: JsonObject) -> bool:
    """A new session goes out with the group commit's inserts; False: it is stored already."""
    await _commit.insert([[(Session.get_pymongo_collection(), [doc], sessions.insert_sessions)]])
    return not doc.pop(sessions.REFUSED, False)


def _event_doc(d: Delivery) -> JsonObject:
    env = d.envelope
    return run_events.event_doc(env.id, env.type, d.subject, d.stream_seq, env.occurred_at, d.payload)


async def _sessions_opened(run_id: str, reports: list[Delivery]) -> None:
    """The sessions' reports, in stream order (the first joins the group commit it is started beside)."""
    for d in reports:
        await sessions.on_opened(run_id, d.payload, d.stream_seq, insert=_insert_session)


async def ingest_group(ctx: Context, deliveries: list[Delivery], *, again: bool = False) -> None:
    """One run's events, in stream order. `again`: some of them may be stored already (a redelivery
    or a reclaim, possibly cut into other groups than the first time)."""
    run_id = run_of(deliveries[0].subject)
    if not await _known(run_id, deliveries[0].envelope.type):
        return
    outbox = Outbox(ctx.publisher)
    try:
        await _ingest(
            dataclasses.replace(ctx, publisher=outbox),
            run_id,
            deliveries,
            again or any(d.deliveries > 1 for d in deliveries),
        )
    finally:
        # What the steps announced follows state they stored: held until the group's writes are
        # stored, and still published if a later write failed (the retry finds those steps done).
        await outbox.release()


def _unfolded(deliveries: list[Delivery]) -> tuple[list[Delivery], set[int]]:
    """A runner's final status that carries its session's end counts as that session's report just
    before it (as the runner once sent it, an event of its own); the positions of those reports."""
    out: list[Delivery] = []
    carried: set[int] = set()
    for d in deliveries:
        if isinstance(d.payload, p.RunStatusChanged) and d.payload.session is not None:
            carried.add(len(out))
            out.append(dataclasses.replace(d, payload=d.payload.session))
        out.append(d)
    return out, carried


def _superseded(deliveries: list[Delivery]) -> set[int]:
    """Positions of session reports that a later report of the same session and attempt in this fetch
    replaces (each report sets the same fields), with no change of that session between them: storing
    only the last is the same end state in one write instead of two."""
    out: set[int] = set()
    last: dict[tuple[str, int], int] = {}
    for i, d in enumerate(deliveries):
        if isinstance(d.payload, p.SessionOpened):
            key = (d.payload.session_id, d.payload.attempt)
            if key in last:
                out.add(last[key])
            last[key] = i
        elif isinstance(d.payload, p.SessionChanged):
            last.pop((d.payload.session_id, d.payload.attempt), None)
    return out


async def _ingest(ctx: Context, run_id: str, deliveries: list[Delivery], again: bool) -> None:
    events: list[JsonObject] = []
    changes: list[Any] = []
    records: list[Any] = []
    opened_by: list[Any] = []
    reports: list[Delivery] = []  # the sessions' reports, stored with the events before the run's facts
    facts: list[Delivery] = []  # the run's status and runtime events not applied yet: one write for them all
    heartbeat = False

    async def apply_facts() -> None:
        """What came before them stored, the facts go out as one write of the run."""
        await flush()
        if facts:
            await engine.on_run_facts(ctx, run_id, [(f.payload, f.stream_seq) for f in facts], again=again)
            waiting = any(
                isinstance(f.payload, p.RunStatusChanged) and f.payload.status == "waiting_approval" for f in facts
            )
            facts.clear()
            if waiting:  # the run now waits, as stored: its approvals are announced (never before this)
                await announce_requested(ctx, run_id)

    async def flush() -> None:
        fresh = await run_events.unstored(run_id, events) if again and events else events
        stored = _commit.insert(
            [
                [
                    (ledger.collection(), list(records), ledger.insert_records),
                    (run_events.collection(), run_events.chunk_docs(run_id, fresh), run_events.insert_chunks),
                ],
                [(SessionChangeRecord.get_pymongo_collection(), list(changes), sessions.insert_new)],
            ]
        )
        # A new session's insert goes out in the same round as the events' chunk, not a round after it.
        await asyncio.gather(stored, _sessions_opened(run_id, list(reports)))
        for ev in opened_by:  # a change that outran its session's "opened"
            await sessions.ensure_session(run_id, ev)
        events.clear()
        changes.clear()
        records.clear()
        opened_by.clear()
        reports.clear()

    deliveries, carried = _unfolded(deliveries)
    superseded = _superseded(deliveries)
    calls: dict[tuple[str, str], list[Any]] = {}  # the model calls' tokens and cost by (provider, model), counted once
    for i, d in enumerate(deliveries):
        if i in carried:  # stored as the session's report; the event is the verdict that carries it
            if i not in superseded:
                reports.append(d)
            continue
        if isinstance(d.payload, p.Heartbeat):
            count_heartbeat(run_id, d.payload.mailbox_depth, d.payload.mailbox_dropped)
            heartbeat = True  # liveness only: the stream keeps heartbeats; the database does not need them
            continue
        if not isinstance(d.payload, UNCAPPED) and not _room(run_id, ctx.settings.run_events_max):
            continue
        if isinstance(d.payload, p.LLMCalled):
            spent = calls.setdefault((d.payload.provider, d.payload.model), [0, 0, 0.0])
            spent[0] += max(0, d.payload.input_tokens)
            spent[1] += max(0, d.payload.output_tokens)
            spent[2] += max(0.0, d.payload.cost_usd)
        if isinstance(d.payload, RUN_FACTS):
            facts.append(d)
            if isinstance(d.payload, p.RunStatusChanged) and d.payload.status == "waiting_approval":
                await apply_facts()  # announced before anything after it moves the run
        elif isinstance(d.payload, p.SessionOpened):
            if i not in superseded:
                reports.append(d)
        elif isinstance(d.payload, p.ApprovalRequested):
            await apply_facts()
            await on_requested(ctx, d.payload)
        elif isinstance(d.payload, p.SessionChanged):
            # Provenance: each ledger entry's hash as the run reported it, first report wins.
            records.append(ledger.record_doc(run_id, d.payload.attempt, d.payload.session_id, d.payload.change))
            changes.append(sessions.change_record(run_id, d.payload))
            if d.payload.change.seq == 0:
                opened_by.append(d.payload)
        events.append(_event_doc(d))
    if calls and (agent_id := await agent_of(run_id)) is not None:
        for (provider, model), (tokens_in, tokens_out, cost) in calls.items():
            count_llm_call(agent_id, provider, model, tokens_in, tokens_out, cost)
    await apply_facts()
    if heartbeat and time.monotonic() - _heartbeats.get(run_id, 0.0) >= HEARTBEAT_WRITE_EVERY_S:
        _heartbeats[run_id] = time.monotonic()
        if len(_heartbeats) > 100_000:
            _heartbeats.clear()
        await update_document(Run, run_id, {"$set": {"last_heartbeat_at": now()}}, beside_versioned=True)


def _room(run_id: str, cap: int) -> bool:
    """One more event of the run may be stored. Anything holding the run's credential can publish on its
    subjects (a process that stole it from a runner, a runner gone wrong): past `cap` its events are
    dropped and counted, never stored, so one run cannot grow the database without bound. Counted per
    process (a restart or another replica counts afresh) and with events handed out again: an event
    redelivered after a failed write counts twice, so the cap binds early, never late."""
    n = _stored.get(run_id, 0)
    if n >= cap:
        RUN_EVENTS_DROPPED.inc()
        if n == cap:
            log.warning("run %s: past %d events; its events are dropped (its status still applies)", run_id, cap)
            _stored[run_id] = n + 1  # warned once
        return False
    if len(_stored) > 100_000:
        _stored.clear()
    _stored[run_id] = n + 1
    return True


async def handle_run_event(ctx: Context, d: Delivery) -> None:
    """One event on its own: the fallback after its group failed, so part of it may be stored."""
    await ingest_group(ctx, [d], again=True)

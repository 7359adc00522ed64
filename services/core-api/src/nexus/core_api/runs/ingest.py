"""core-api's consumer of every run's events: persist them, then let them move the run."""

import logging

import msgspec
from pymongo.errors import DuplicateKeyError

from nexus.core_api.approvals.service import on_requested
from nexus.core_api.context import Context
from nexus.core_api.ledger.record import record_change
from nexus.core_api.runs import lifecycle
from nexus.core_api.sessions import service as sessions
from nexus.db.cache import cached_get
from nexus.db.documents import Run, RunEvent, now
from nexus.db.writes import update_document
from nexus.events import payloads as p
from nexus.events.consumer import Delivery

log = logging.getLogger("nexus.core_api.ingest")


async def handle_run_event(ctx: Context, d: Delivery) -> None:
    parts = d.subject.split(".")
    run_id = parts[2]
    data = d.payload
    if (run := await cached_get(Run, run_id)) is None:
        # Not a run of this core-api's database (another deployment sharing the bus, or a
        # runner started by hand): nothing here may change because of it.
        log.debug("ignoring %s for unknown run %s", d.envelope.type, run_id)
        return
    match data:
        case p.RunStatusChanged():
            await lifecycle.on_status(ctx, run_id, data)
        case p.RuntimeChanged():
            await lifecycle.on_runtime(ctx, run_id, data)
        case p.SessionOpened():
            await sessions.on_opened(run_id, data)
        case p.SessionChanged():
            await record_change(run, data.session_id, data.change, getattr(data, "attempt", None))
            await sessions.on_change(run_id, data)
        case p.Heartbeat():
            await update_document(Run, run_id, {"$set": {"last_heartbeat_at": now()}})
            return  # liveness only: the stream keeps heartbeats; the database does not need them
        case p.ApprovalRequested():
            await on_requested(ctx, data)
    try:
        await RunEvent(
            id=d.envelope.id, run_id=run_id, type=d.envelope.type, subject=d.subject, stream_seq=d.stream_seq,
            occurred_at=d.envelope.occurred_at, data=msgspec.to_builtins(data),
        ).insert()
    except DuplicateKeyError:
        pass  # redelivered: already stored

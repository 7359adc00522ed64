"""A run's events past what core-api keeps of one run are dropped and counted, never stored (real
FerretDB). Anything holding a run's credential can publish on its subjects: before, a flood of its events
(its notes, logs, session changes) was stored whole, every one a database write, a ledger record and a
line of the run's answers. The run's status still moves it after the flood."""

import dataclasses

import msgspec
import pytest

from nexus.core_api.metrics import RUN_EVENTS_DROPPED
from nexus.core_api.runs.ingest import ingest_group
from nexus.db.documents import SessionChangeRecord
from nexus.domain.ledger import seal
from nexus.domain.sessions import NoteChange
from nexus.events import payloads as p
from tests.core_api.conftest import in_app, new_run
from tests.core_api.test_run_event_chunks import delivery, stored_copies

pytestmark = pytest.mark.infra
CAP = 40


async def test_a_flood_of_one_runs_events_stores_no_more_than_the_cap(client, app) -> None:
    run = await new_run(client)
    run_id, sid = run["id"], run["session_id"]
    ctx = dataclasses.replace(
        app.state.ctx, settings=msgspec.structs.replace(app.state.ctx.settings, run_events_max=CAP)
    )
    notes = seal([NoteChange(timestamp="2026-12-06T00:00:00Z", message=f"n{i}") for i in range(60)])
    seq = 0
    dropped_before = RUN_EVENTS_DROPPED._value.get()
    for batch in range(5):  # 5 fetches of 12 logs and 12 changes: 120 events for a cap of 40
        group = []
        for i in range(12):
            seq += 1
            group.append(delivery(run_id, "run.log", p.RunLog(message=f"flood {seq}"), seq))
            seq += 1
            change = notes[batch * 12 + i]
            group.append(delivery(run_id, "run.note", p.SessionChanged(session_id=sid, change=change), seq))
        await in_app(client, ingest_group, ctx, group)
    assert len(await stored_copies(client, run_id)) == CAP
    records = await in_app(client, lambda: SessionChangeRecord.find({"run_id": run_id}).count())
    assert records <= CAP // 2, records
    assert RUN_EVENTS_DROPPED._value.get() - dropped_before == 120 - CAP
    # What moves the run is never dropped: its status after the flood is applied.
    seq += 1
    await in_app(client, ingest_group, ctx, [delivery(run_id, "run.status", p.RunStatusChanged(status="running"), seq)])
    r = await client.get(f"/v1/runs/{run_id}")
    assert r.json()["status"] == "running", r.json()


async def test_a_flood_of_one_runs_approval_requests_stores_no_more_than_the_cap(client, app) -> None:
    """Approval requests pass the events cap (they move the run), and each stored one is announced to every
    approver: anything holding the run's credential flooded the team leads and the database with them. Past
    `run_approvals_max` they are dropped and counted; one stored already (handed out again) still passes."""
    from nexus.db.documents import Approval

    run = await new_run(client)
    run_id, sid = run["id"], run["session_id"]
    ctx = dataclasses.replace(
        app.state.ctx, settings=msgspec.structs.replace(app.state.ctx.settings, run_approvals_max=3)
    )

    def asked(n: int) -> p.ApprovalRequested:
        return p.ApprovalRequested(
            approval_id=f"apr_flood{n}", run_id=run_id, action="deploy", detail="", session_id=sid
        )

    dropped_before = RUN_EVENTS_DROPPED._value.get()
    for n in range(8):
        await in_app(client, ingest_group, ctx, [delivery(run_id, "run.approval_requested", asked(n), n + 1)])
    await in_app(client, ingest_group, ctx, [delivery(run_id, "run.approval_requested", asked(0), 9)])
    stored = await in_app(client, lambda: Approval.find({"run_id": run_id}).to_list())
    assert sorted(a.id for a in stored) == ["apr_flood0", "apr_flood1", "apr_flood2"]
    assert RUN_EVENTS_DROPPED._value.get() - dropped_before == 5

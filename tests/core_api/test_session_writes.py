"""A session's later status report from its run is one write when this core-api stored it open
(real FerretDB): no upsert that would change nothing, and still never a reopening by an older report."""

import pytest

import dataclasses

from nexus.core_api.runs.ingest import ingest_group
from nexus.core_api.sessions.service import on_opened
from nexus.db.stats import COMMANDS
from nexus.domain.sessions import NoteChange
from nexus.events.payloads import RunLog, SessionChanged, SessionOpened
from tests.core_api.conftest import in_app, new_run
from tests.core_api.test_announce_after_store import delivery

pytestmark = pytest.mark.infra


def updates() -> float:
    return COMMANDS.labels("update", "sessions", "ok")._value.get()


async def test_a_session_opened_here_is_completed_with_one_write(client) -> None:
    run = await new_run(client)
    sid = run["session_id"]
    await in_app(client, on_opened, run["id"], SessionOpened(session_id=sid, project_path="/w", status="active"), 10)
    before = updates()
    await in_app(client, on_opened, run["id"], SessionOpened(session_id=sid, project_path="/w", status="completed"), 20)
    assert updates() == before + 1
    # A redelivered older report changes nothing.
    await in_app(client, on_opened, run["id"], SessionOpened(session_id=sid, project_path="/w", status="active"), 10)
    (session,) = (await client.get(f"/v1/runs/{run['id']}")).json()["sessions"]
    assert session["status"] == "completed"


async def test_a_sessions_opening_and_closing_in_one_fetch_are_one_write(client, app) -> None:
    run = await new_run(client)
    sid, ctx = run["session_id"], app.state.ctx
    group = [
        delivery(run["id"], "run.session", SessionOpened(session_id=sid, project_path="/w", backend="scripted"), 1),
        delivery(run["id"], "run.log", RunLog(message="working"), 2),
        delivery(run["id"], "run.session", SessionOpened(session_id=sid, project_path="/w", status="completed"), 3),
    ]
    before = updates()
    await in_app(client, ingest_group, ctx, group)
    assert updates() == before + 1
    (session,) = (await client.get(f"/v1/runs/{run['id']}")).json()["sessions"]
    assert (session["status"], session["backend"], session["projectPath"]) == ("completed", "scripted", "/w")
    # Handed out again: the older report, on its own, does not reopen it.
    await in_app(client, ingest_group, ctx, [dataclasses.replace(group[0], deliveries=2)])
    (session,) = (await client.get(f"/v1/runs/{run['id']}")).json()["sessions"]
    assert session["status"] == "completed"


async def test_a_change_between_a_sessions_reports_keeps_both(client, app) -> None:
    """A change of the session between its two reports: the first report stores the session the
    change belongs to (no extra upsert for the change), the second closes it."""
    run = await new_run(client)
    sid, ctx = run["session_id"], app.state.ctx
    change = SessionChanged(session_id=sid, change=NoteChange(timestamp="2026-01-01T00:00:00Z", seq=0, message="n"))
    group = [
        delivery(run["id"], "run.session", SessionOpened(session_id=sid, project_path="/w"), 1),
        delivery(run["id"], "run.note", change, 2),
        delivery(run["id"], "run.session", SessionOpened(session_id=sid, project_path="/w", status="completed"), 3),
    ]
    before = updates()
    await in_app(client, ingest_group, ctx, group)
    assert updates() == before + 2
    (session,) = (await client.get(f"/v1/runs/{run['id']}")).json()["sessions"]
    assert session["status"] == "completed"

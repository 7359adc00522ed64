"""A session's later status report from its run is one write when this core-api stored it open
(real FerretDB): no upsert that would change nothing, and still never a reopening by an older report.
A session's first report, ingested, is an insert that joins the group commit: the sessions of the
runs ingested at once go out in one insert_many, not an upsert each."""

import asyncio
import dataclasses

import pytest

from nexus.core_api.runs.ingest import ingest_group
from nexus.core_api.sessions.service import on_opened
from nexus.db.stats import COMMANDS
from nexus.domain.sessions import NoteChange
from nexus.events.payloads import RunLog, SessionChanged, SessionOpened
from tests.core_api.conftest import in_app, new_run
from tests.core_api.test_announce_after_store import delivery
from tests.core_api.test_ui import jar, sign_in

pytestmark = pytest.mark.infra


def updates() -> float:
    return COMMANDS.labels("update", "sessions", "ok")._value.get()


def inserts() -> float:
    return COMMANDS.labels("insert", "sessions", "ok")._value.get()


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
    before, inserted = updates(), inserts()
    await in_app(client, ingest_group, ctx, group)
    assert (updates(), inserts()) == (before, inserted + 1)  # one write: the session inserted as it ended
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
    before, inserted = updates(), inserts()
    await in_app(client, ingest_group, ctx, group)
    assert (updates(), inserts()) == (before + 1, inserted + 1)
    (session,) = (await client.get(f"/v1/runs/{run['id']}")).json()["sessions"]
    assert session["status"] == "completed"


async def test_the_sessions_of_runs_ingested_at_once_go_out_in_one_insert(client, app) -> None:
    runs = [await new_run(client) for _ in range(5)]
    ctx = app.state.ctx
    groups = [
        [delivery(r["id"], "run.session", SessionOpened(session_id=r["session_id"], project_path="/w"), 1)]
        for r in runs
    ]

    async def all_at_once() -> None:
        await asyncio.gather(*(ingest_group(ctx, g) for g in groups))

    before, inserted = updates(), inserts()
    await in_app(client, all_at_once)
    assert (updates(), inserts()) == (before, inserted + 1)
    for r in runs:
        (session,) = (await client.get(f"/v1/runs/{r['id']}")).json()["sessions"]
        assert (session["status"], session["projectPath"], session["attempt"]) == ("active", "/w", 1)


async def test_a_session_stored_already_is_refused_by_the_insert_and_updated(client, app) -> None:
    """A later attempt's first report (the session stored by the attempt before), or a report whose
    session a change stored first: the insert is refused by the id, and the upsert does what it did."""
    run = await new_run(client)
    sid, ctx = run["session_id"], app.state.ctx
    first = SessionOpened(session_id=sid, project_path="/w", status="error")
    await in_app(client, ingest_group, ctx, [delivery(run["id"], "run.session", first, 1)])
    again = SessionOpened(session_id=sid, project_path="/w2", status="active", attempt=2)
    before = updates()
    await in_app(client, ingest_group, ctx, [delivery(run["id"], "run.session", again, 2)])
    assert updates() == before + 2  # the attempt raised by the upsert, the report set by a later one
    (session,) = (await client.get(f"/v1/runs/{run['id']}")).json()["sessions"]
    assert (session["status"], session["projectPath"], session["attempt"]) == ("active", "/w2", 2)


async def test_a_session_keeps_what_confines_its_commands(client, app, settings) -> None:
    """The run's opening report names its sandbox (no log line beside it); stored on the session and shown
    with it. A report that does not say (an older runner's) leaves it as it was."""
    run = await new_run(client)
    sid, ctx = run["session_id"], app.state.ctx
    opened = SessionOpened(session_id=sid, project_path="/w", sandbox="landlock")
    await in_app(client, ingest_group, ctx, [delivery(run["id"], "run.session", opened, 1)])
    (session,) = (await client.get(f"/v1/runs/{run['id']}")).json()["sessions"]
    assert session["sandbox"] == "landlock"
    ended = SessionOpened(session_id=sid, project_path="/w", status="completed")
    await in_app(client, ingest_group, ctx, [delivery(run["id"], "run.session", ended, 2)])
    shown = (await client.get(f"/v1/sessions/{sid}")).json()
    assert (shown["status"], shown["sandbox"]) == ("completed", "landlock")
    with jar(client, await sign_in(client, settings.admin_key)) as c:  # and the run's page says it
        page = (await c.get(f"/ui/runs/{run['id']}")).text
    assert 'commands confined by <span class="sandbox">landlock</span>' in page

"""A session's later status report from its run is one write when this core-api stored it open
(real FerretDB): no upsert that would change nothing, and still never a reopening by an older report."""

import pytest

from nexus.core_api.sessions.service import on_opened
from nexus.db.stats import COMMANDS
from nexus.events.payloads import SessionOpened
from tests.core_api.conftest import in_app, new_run

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

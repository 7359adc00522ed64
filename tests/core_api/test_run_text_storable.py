"""A run's own events may carry text no store can keep (a NUL: what a model wrote, what a command
printed). The run still ends in the state its runner reported, with that text made storable, and every
event is stored (real FerretDB and NATS)."""

import pytest

from nexus.core_api.runs.ingest import ingest_group
from nexus.db import run_events
from nexus.events import payloads as p
from tests.core_api.conftest import in_app, new_run
from tests.core_api.test_announce_after_store import delivery

pytestmark = pytest.mark.infra


@pytest.mark.parametrize("status", ["succeeded", "failed"])
async def test_a_verdict_holding_a_nul_ends_the_run_with_the_text_made_storable(client, app, status) -> None:
    run = await new_run(client)
    run_id = run["id"]
    events = [
        ("run.status", p.RunStatusChanged(status="running")),
        ("run.log", p.RunLog(message="printed \x00 by a command")),
        ("run.status", p.RunStatusChanged(status=status, summary="done\x00 here", reason="why\x00not")),
        ("run.runtime", p.RuntimeChanged(phase="exited", attempt=1, runtime="local", exit_code=0, detail="x\x00")),
    ]
    deliveries = [delivery(run_id, t, d, 1 + i) for i, (t, d) in enumerate(events)]
    await in_app(client, ingest_group, app.state.ctx, deliveries)
    stored = (await client.get(f"/v1/runs/{run_id}")).json()
    assert stored["status"] == status
    assert stored["summary"] == "done\ufffd here"
    if status == "failed":
        assert stored["reason"] == "why\ufffdnot"
    assert await in_app(client, run_events.count, run_id) == len(events)  # each event kept as the run sent it
    printed = [e for e in await in_app(client, run_events.events_of, run_id) if e.type == "run.log"]
    assert printed[0].data["message"] == "printed \x00 by a command"

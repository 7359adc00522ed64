"""core-api's sweep closes as `expired` the approvals of runs that ended; a run merely between attempts, or
one given up while its runner may still live and say its verdict, has not ended: its approval stays open,
and a lead's decision reaches the runner (real FerretDB and NATS)."""

import pytest

from nexus.core_api.approvals.service import expire_due
from nexus.core_api.runs.ingest import ingest_group
from nexus.db.documents import Run
from nexus.db.writes import update_document
from nexus.events import payloads as p
from tests.core_api.conftest import in_app, new_run
from tests.core_api.test_announce_after_store import an_ask, delivery

pytestmark = pytest.mark.infra


async def _only_attempt(run_id: str) -> None:
    await update_document(Run, run_id, {"$set": {"max_attempts": 1}})


async def _waiting(client, app, run: dict) -> str:
    """The run's first attempt launched, running, and waiting for a lead: the approval's id."""
    asked = an_ask(run)
    events = [
        ("run.runtime", p.RuntimeChanged(phase="launched", attempt=1, runtime="local", detail="pid 1")),
        ("run.status", p.RunStatusChanged(status="running")),
        ("run.approval_requested", asked),
        ("run.status", p.RunStatusChanged(status="waiting_approval")),
    ]
    group = [delivery(run["id"], t, data, 1 + i) for i, (t, data) in enumerate(events)]
    await in_app(client, ingest_group, app.state.ctx, group)
    assert (await client.get(f"/v1/runs/{run['id']}")).json()["status"] == "waiting_approval"
    return asked.approval_id


async def _runtime_ends(client, app, run_id: str, phase: str, seq: int, **detail) -> dict:
    ended = p.RuntimeChanged(phase=phase, attempt=1, runtime="local", **detail)
    await in_app(client, ingest_group, app.state.ctx, [delivery(run_id, "run.runtime", ended, seq)])
    return (await client.get(f"/v1/runs/{run_id}")).json()


async def _final_by(run_id: str) -> str:
    return (await Run.get(run_id)).final_by


async def _status(client, approval_id: str) -> str:
    return (await client.get(f"/v1/approvals/{approval_id}")).json()["status"]


async def test_a_run_queued_for_its_next_attempt_keeps_its_approval_open(client, app) -> None:
    run = await new_run(client)
    approval = await _waiting(client, app, run)
    stored = await _runtime_ends(client, app, run["id"], "exited", 5, exit_code=-9)
    assert (stored["status"], stored["attempt"]) == ("queued", 2), stored
    await in_app(client, expire_due, app.state.ctx)
    assert await _status(client, approval) == "pending"
    r = await client.post(f"/v1/approvals/{approval}/approve", json={"reason": "fine"})
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text


async def test_a_run_given_up_while_its_runner_may_live_keeps_its_approval_open(client, app) -> None:
    """Its only attempt judged lost (no heartbeat, no execution seen: a partition, a frozen host) fails
    the run by retries, yet the runner may live on and its verdict still decides the run. Expiring the
    approval told that live runner "expired" (its action denied) and answered the lead's approve with a
    409; the run then ended on a denial nobody made."""
    run = await new_run(client)
    await in_app(client, _only_attempt, run["id"])
    approval = await _waiting(client, app, run)
    stored = await _runtime_ends(client, app, run["id"], "lost", 5, detail="no heartbeat for 31s")
    assert stored["status"] == "failed" and await in_app(client, _final_by, run["id"]) == "retries", stored

    await in_app(client, expire_due, app.state.ctx)
    assert await _status(client, approval) == "pending"
    r = await client.post(f"/v1/approvals/{approval}/approve", json={"reason": "fine"})
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text
    # The runner was alive: told, it goes on, and its verdict decides the run.
    said = [
        delivery(run["id"], "run.status", p.RunStatusChanged(status="running"), 6),
        delivery(run["id"], "run.status", p.RunStatusChanged(status="succeeded", summary="done"), 7),
    ]
    await in_app(client, ingest_group, app.state.ctx, said)
    assert (await client.get(f"/v1/runs/{run['id']}")).json()["status"] == "succeeded"


async def test_a_run_whose_runner_is_known_gone_has_its_approval_expired(client, app) -> None:
    run = await new_run(client)
    await in_app(client, _only_attempt, run["id"])
    approval = await _waiting(client, app, run)
    stored = await _runtime_ends(client, app, run["id"], "exited", 5, exit_code=-9)
    assert stored["status"] == "failed" and await in_app(client, _final_by, run["id"]) == "retries", stored
    assert await in_app(client, expire_due, app.state.ctx) >= 1
    assert await _status(client, approval) == "expired"

"""A run cancelled, or an approval decided, while the bus does not answer: the step is stored and answered
at once (202), and the worker or the run is told (and the end announced) once the bus is back — never a
30 s wait, never a 503 after the step was already stored (whose retry would only hear 409 while the
runner was never told)."""

import asyncio
import dataclasses
import uuid

import msgspec
import pytest

from nexus.events.bus import connect
from nexus.db.documents import Approval
from nexus.events.catalog import CMDS_STREAM, RUNS_STREAM, spec
from nexus.events.envelope import decode_raw
from tests.core_api.conftest import in_app, new_agent
from tests.core_api.test_submit_without_bus import Unanswered

pytestmark = pytest.mark.infra


async def test_a_cancel_while_the_bus_is_down_is_taken_and_the_worker_told_once_it_is_back(
    app, client, nats_url, nats_creds
) -> None:
    agent = await new_agent(client)
    r = await client.post("/v1/tasks", json={"title": "to be cancelled without the bus", "assignee": agent["id"]})
    run_id = r.json()["current_run_id"]
    real = app.state.ctx
    bus = Unanswered(real.publisher)
    app.state.ctx = dataclasses.replace(real, publisher=bus)
    try:
        r = await client.post(f"/v1/runs/{run_id}/cancel", json={"reason": "stop it"})
    finally:
        app.state.ctx = real
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "cancelled"
    assert (await client.post(f"/v1/runs/{run_id}/cancel")).status_code == 409  # taken: nothing to ask again

    bus.down = False  # the bus is back: what the cancel left undone goes out
    told = await last_on(nats_url, nats_creds, client, CMDS_STREAM, spec("worker.cancel_run").subject_for(), run_id)
    assert told, "the worker was never told to stop the cancelled run"
    task = (await client.get(f"/v1/tasks/{r.json()['task_id']}")).json()
    assert task["status"] == "cancelled"


async def test_a_decision_while_the_bus_is_down_is_taken_and_the_run_told_once_it_is_back(
    app, client, nats_url, nats_creds
) -> None:
    run_id = f"run_{uuid.uuid4().hex}"
    apr = Approval(id=f"apr_{uuid.uuid4().hex}", run_id=run_id, action="command", detail="make")
    await in_app(client, apr.insert)
    real = app.state.ctx
    bus = Unanswered(real.publisher)
    app.state.ctx = dataclasses.replace(real, publisher=bus)
    try:
        r = await client.post(f"/v1/approvals/{apr.id}/approve", json={"reason": "go"})
    finally:
        app.state.ctx = real
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "approved"
    assert (await client.post(f"/v1/approvals/{apr.id}/approve")).status_code == 409  # taken already

    bus.down = False
    subject = spec("run.approval_decided").subject_for(run_id=run_id)
    assert await last_on(nats_url, nats_creds, client, RUNS_STREAM, subject, run_id), "the run never heard it"


async def last_on(nats_url: str, nats_creds: str, client, stream: str, subject: str, run_id: str) -> bool:
    """Whether the last message on `subject` names `run_id`, polled a bounded number of times while the
    app's loop runs (what waits for the bus to come back runs there)."""
    nc = await connect(nats_url, "tests", creds=nats_creds)
    try:
        for _ in range(600):
            try:
                msg = await nc.jetstream().get_last_msg(stream, subject)
            except Exception:  # noqa: BLE001 — none yet
                msg = None
            if msg is not None and msgspec.json.decode(decode_raw(msg.data).data).get("run_id") == run_id:
                return True
            await client.get("/healthz")
            await asyncio.sleep(0.05)
        return False
    finally:
        await nc.close()

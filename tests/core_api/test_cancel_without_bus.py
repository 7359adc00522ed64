"""A run cancelled while the bus does not answer: the cancel is stored and answered at once (202), and
the worker is told (and the end announced) once the bus is back — never a 30 s wait, never a 503 after
the run was already ended (whose retry would only hear 409 while the runner was never told to stop)."""

import asyncio
import dataclasses

import msgspec
import pytest

from nexus.events.bus import connect
from nexus.events.catalog import CMDS_STREAM, spec
from nexus.events.envelope import decode_raw
from tests.core_api.conftest import new_agent
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
    nc = await connect(nats_url, "tests", creds=nats_creds)
    try:
        told = None
        for _ in range(600):
            try:
                msg = await nc.jetstream().get_last_msg(CMDS_STREAM, spec("worker.cancel_run").subject_for())
            except Exception:  # noqa: BLE001 — none yet
                msg = None
            if msg is not None and msgspec.json.decode(decode_raw(msg.data).data)["run_id"] == run_id:
                told = msg
                break
            await client.get("/healthz")  # lets the app's loop run while the test waits
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
    assert told is not None, "the worker was never told to stop the cancelled run"
    task = (await client.get(f"/v1/tasks/{r.json()['task_id']}")).json()
    assert task["status"] == "cancelled"

"""core-api's run state converges when a crashed consumer's events come back late (real NATS and
FerretDB): the runner's verdict wins over a lagging launched/running, and an exit never retries
an attempt that already gave its verdict."""

import asyncio

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from nexus.core_api.runs.ingest import handle_run_event
from nexus.events.bus import Publisher, connect
from nexus.events.consumer import Delivery
from nexus.events.envelope import decode_raw
from nexus.domain.ledger import seal, verify_chain
from nexus.domain.sessions import NoteChange
from nexus.events.payloads import RunStatusChanged, RuntimeChanged, SessionChanged, SessionOpened
from tests.core_api.conftest import new_run

pytestmark = pytest.mark.infra


async def _publish(publisher: Publisher, run_id: str, type_: str, data) -> Delivery:
    """Put the event on the run's stream as its publisher would (the tests' own NATS user: core-api's
    may not speak for a run), and hand core-api the delivery it would fetch."""
    env = await publisher.publish(type_, data, run_id=run_id, correlation_id=run_id)
    msg = await publisher.js.get_last_msg("NEXUS_RUNS", f"nexus.run.{run_id}.{type_.split('.')[1]}")
    raw = decode_raw(msg.data)
    assert raw.id == env.id
    return Delivery(raw, msgspec.json.decode(raw.data, type=type(data)), msg.subject, 1, msg.seq)


async def in_app(client: AsyncTestClient, fn, *args):
    """Run a coroutine function on the app's own loop (its database and bus clients live there)."""
    return await asyncio.to_thread(client.blocking_portal.call, fn, *args)


@pytest.fixture
async def publisher(nats_url: str, nats_creds: str):
    nc = await connect(nats_url, "test-convergence", creds=nats_creds)
    yield Publisher(nc.jetstream(), "test")
    await nc.close()


async def _run_after(
    client: AsyncTestClient, app: Litestar, publisher: Publisher, order: list[int], *, exit_code: int = 0
) -> dict:
    ctx = app.state.ctx
    run = await new_run(client)
    run_id = run["id"]
    # What really happened, in stream order: launched, running, succeeded, exited.
    events = [
        await _publish(
            publisher,
            run_id,
            "run.runtime",
            RuntimeChanged(phase="launched", attempt=1, runtime="local", detail="pid 1"),
        ),
        await _publish(publisher, run_id, "run.status", RunStatusChanged(status="running", attempt=1)),
        await _publish(
            publisher,
            run_id,
            "run.status",
            RunStatusChanged(status="succeeded", attempt=1, summary="done", commit_sha="abc"),
        ),
        await _publish(
            publisher,
            run_id,
            "run.runtime",
            RuntimeChanged(phase="exited", attempt=1, runtime="local", exit_code=exit_code),
        ),
    ]
    for i in order:
        await in_app(client, handle_run_event, ctx, events[i])
    r = await client.get(f"/v1/runs/{run_id}")
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [2, 3, 0, 1], [3, 2, 1, 0], [1, 3, 0, 2, 2, 3, 1, 0]])
async def test_verdict_wins_whatever_the_order(
    client: AsyncTestClient, app: Litestar, publisher: Publisher, order: list[int]
) -> None:
    run = await _run_after(client, app, publisher, order)
    assert (run["status"], run["attempt"], run["commit_sha"]) == ("succeeded", 1, "abc"), run
    assert [a["status"] for a in run["attempts"]] == ["succeeded"]


async def test_an_exit_delivered_before_its_verdict_does_not_retry(
    client: AsyncTestClient, app: Litestar, publisher: Publisher
) -> None:
    """The exit arrives while the verdict is still held by a dead consumer: core-api finds the verdict on
    the stream and the run ends succeeded, attempt 1, with no second launch."""
    run = await _run_after(client, app, publisher, [3])
    assert (run["status"], run["attempt"]) == ("succeeded", 1), run


async def test_each_attempt_keeps_its_own_session_chain(
    client: AsyncTestClient, app: Litestar, publisher: Publisher
) -> None:
    """Attempts share a session id and each restarts seq at 0: their changes are kept apart, a
    redelivered change is stored once, and every attempt's chain verifies on its own."""
    ctx = app.state.ctx
    run = await new_run(client)
    run_id, sid = run["id"], run["session_id"]
    chains = {
        n: seal([NoteChange(timestamp="2026-01-01T00:00:00Z", message=f"attempt {n} note {i}") for i in range(k)])
        for n, k in ((1, 3), (2, 2))
    }
    for n, changes in chains.items():
        opened = await _publish(
            publisher, run_id, "run.session", SessionOpened(session_id=sid, project_path="/w", attempt=n)
        )
        await in_app(client, handle_run_event, ctx, opened)
        for change in changes:
            d = await _publish(publisher, run_id, "run.note", SessionChanged(session_id=sid, change=change, attempt=n))
            await in_app(client, handle_run_event, ctx, d)
            await in_app(client, handle_run_event, ctx, d)  # redelivered
    r = await client.get(f"/v1/runs/{run_id}")
    assert r.status_code == 200, r.text
    (session,) = r.json()["sessions"]
    assert [(a["attempt"], len(a["changes"]), a["verified"]) for a in session["attempts"]] == [
        (1, 3, True),
        (2, 2, True),
    ]
    assert session["notes"] == ["attempt 2 note 0", "attempt 2 note 1"]
    assert session["attempts"][0]["ledgerHash"] == chains[1][-1].hash
    assert verify_chain(session["changes"]).ok


async def test_a_late_active_report_does_not_reopen_a_completed_session(
    client: AsyncTestClient, app: Litestar, publisher: Publisher
) -> None:
    """The session's `active` report, held by a killed core-api, comes back after its `completed`:
    the later report on the stream stands."""
    ctx = app.state.ctx
    run = await new_run(client)
    run_id, sid = run["id"], run["session_id"]
    active = await _publish(publisher, run_id, "run.session", SessionOpened(session_id=sid, project_path="/w"))
    done = await _publish(
        publisher, run_id, "run.session", SessionOpened(session_id=sid, project_path="/w", status="completed")
    )
    for d in (done, active, done, active):  # delivered late, and redelivered
        await in_app(client, handle_run_event, ctx, d)
    r = await client.get(f"/v1/sessions/{sid}")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed", r.json()

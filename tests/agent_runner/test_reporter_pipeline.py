"""The runner's events are pipelined (sent without waiting for each ack) yet keep their order on the
stream, a status goes out only after everything said before it is stored, a ledger entry is stored
before the tool's result is used, and a publish that failed is raised, never dropped. Real NATS."""

import asyncio
import uuid

import pytest

from nexus.agent_runner.reporter import RunReporter
from nexus.domain.sessions import NoteChange
from nexus.events.catalog import RUNS_STREAM
from tests.agent_runner.test_runner_support import js, read_events  # noqa: F401 — the fixture

pytestmark = pytest.mark.infra


async def test_events_keep_their_order_and_a_status_waits_for_them(js) -> None:
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    r = RunReporter(js, run_id, 1)
    await r.status("running")
    for i in range(20):
        await r.log(f"line {i}")
    await r.llm(step=1, provider="scripted", model="scripted", text="done")
    await r.status("succeeded")
    events = await read_events(js, run_id)
    kinds = [(e["type"], e["data"].get("message") or e["data"].get("status")) for _, e in events]
    assert kinds == [
        ("run.status", "running"),
        *[("run.log", f"line {i}") for i in range(20)],
        ("run.llm", None),
        ("run.status", "succeeded"),
    ]
    assert len({e["id"] for _, e in events}) == len(events)  # each its own message id (JetStream's dedupe id)


async def test_a_ledger_entry_is_stored_before_the_recorder_returns(js, monkeypatch) -> None:
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    r = RunReporter(js, run_id, 1)
    real = r.publisher.publish
    acked: list[str] = []

    async def publish(type_, data, **kw):
        env = await real(type_, data, **kw)  # returns once JetStream acknowledged it
        acked.append(type_)
        return env

    monkeypatch.setattr(r.publisher, "publish", publish)
    await r.log("before")
    record = r.change_recorder(f"ses_{run_id[4:]}", None)
    await record(NoteChange(seq=0, timestamp="2026-01-01T00:00:00.000Z", message="noted"))
    assert acked == ["run.log", "run.note"]
    info = await js.stream_info(RUNS_STREAM, subjects_filter=f"nexus.run.{run_id}.>")
    assert info.state.subjects == {f"nexus.run.{run_id}.log": 1, f"nexus.run.{run_id}.note": 1}


async def test_a_publish_that_failed_is_raised_at_the_next_status(js, monkeypatch) -> None:
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    r = RunReporter(js, run_id, 1)
    real = r.publisher.publish

    async def refused(type_, data, **kw):
        if type_ == "run.log":
            await asyncio.sleep(0)
            raise RuntimeError("the stream refused it")
        return await real(type_, data, **kw)

    monkeypatch.setattr(r.publisher, "publish", refused)
    await r.log("lost?")
    with pytest.raises(RuntimeError, match="refused"):
        await r.status("succeeded")
    await r.status("failed", reason="events could not be stored")  # the failure was reported once, then cleared
    statuses = [e["data"]["status"] for _, e in await read_events(js, run_id) if e["type"] == "run.status"]
    assert statuses == ["failed"]

"""A run's status and runtime events of one fetch are stored as ONE write of the run, and every
transition among them still has its effects, in order (real FerretDB and NATS): the run's `version`
counts its writes; a recording publisher sees what the ingestion announced. And a model call of a
run this core-api dispatched is counted by agent without reading the run."""

import dataclasses

import pytest

from nexus.core_api.runs.ingest import ingest_group
from nexus.db import run_events
from nexus.db.documents import Run
from nexus.events import payloads as p
from nexus.events.bus import Publisher
from tests.core_api.conftest import in_app, new_run
from tests.core_api.test_announce_after_store import delivery

pytestmark = pytest.mark.infra


class Recorder(Publisher):
    """The real publisher, keeping (type, payload) of everything published through it."""

    def __init__(self, publisher: Publisher) -> None:
        super().__init__(publisher.js, publisher.source)
        self.publisher = publisher
        self.sent: list[tuple[str, object]] = []
        self.ids: list[str] = []  # the envelope id of each

    async def publish(self, type_: str, data, **options):
        self.sent.append((type_, data))
        env = await self.publisher.publish(type_, data, **options)
        self.ids.append(env.id)
        return env

    def of_run(self, run_id: str) -> list[str]:
        return [t for t, d in self.sent if getattr(d, "run_id", None) == run_id or t.startswith("task.")]


def _trivial_run(run_id: str) -> list:
    """What a trivial run's stream holds: the worker's launch, the runner's running and verdict, the exit."""
    events = [
        ("run.runtime", p.RuntimeChanged(phase="launched", attempt=1, runtime="local", detail="pid 1")),
        ("run.status", p.RunStatusChanged(status="running")),
        ("run.log", p.RunLog(message="working")),
        ("run.status", p.RunStatusChanged(status="succeeded", summary="done")),
        ("run.runtime", p.RuntimeChanged(phase="exited", attempt=1, runtime="local", exit_code=0)),
    ]
    return [delivery(run_id, t, data, 1 + i) for i, (t, data) in enumerate(events)]


async def _version(run_id: str) -> int:
    return (await Run.get(run_id)).version


async def _a_run(client, app) -> tuple[dict, Recorder, object, int]:
    """A dispatched run, a context whose announcements are recorded, and the run's version (its writes)."""
    run = await new_run(client)
    recorder = Recorder(app.state.ctx.publisher)
    return (
        run,
        recorder,
        dataclasses.replace(app.state.ctx, publisher=recorder),
        await in_app(client, _version, run["id"]),
    )


async def test_a_fetch_of_a_runs_facts_is_one_write_with_every_transitions_effects(client, app) -> None:
    run, recorder, ctx, before = await _a_run(client, app)
    run_id = run["id"]
    events = _trivial_run(run_id)
    await in_app(client, ingest_group, ctx, events)
    assert await in_app(client, _version, run_id) == before + 1  # four facts, one write
    stored = (await client.get(f"/v1/runs/{run_id}")).json()
    assert stored["status"] == "succeeded" and stored["summary"] == "done"
    assert stored["started_at"] and stored["ended_at"]
    # Each transition announced, in order: started (queued → running), then its end (the task's, the run's).
    sent = recorder.of_run(run_id)
    assert [t for t in sent if t.startswith("run.")] == ["run.started", "run.succeeded"]
    assert sent.index("run.started") < sent.index("task.status_changed")
    assert (await client.get(f"/v1/tasks/{run['task_id']}")).json()["status"] == "done"

    # Handed out again (a redelivery, cut differently): nothing written, nothing announced twice. (The
    # run's end is announced again — the process it first went to may have died before announcing it —
    # under the ids of its first announcements, which JetStream and every consumer take once.)
    first = set(recorder.ids)
    recorder.sent.clear()
    recorder.ids.clear()
    again = [dataclasses.replace(d, deliveries=2) for d in events]
    await in_app(client, ingest_group, ctx, again[:2])
    await in_app(client, ingest_group, ctx, again)
    assert await in_app(client, _version, run_id) == before + 1
    assert "run.succeeded" in recorder.of_run(run_id) and set(recorder.ids) <= first


async def test_a_failed_attempt_and_its_retry_in_one_fetch_launch_the_retry(client, app) -> None:
    run, recorder, ctx, before = await _a_run(client, app)
    run_id = run["id"]
    group = [
        delivery(run_id, "run.runtime", p.RuntimeChanged(phase="launched", attempt=1, runtime="local"), 1),
        delivery(run_id, "run.status", p.RunStatusChanged(status="running"), 2),
        delivery(run_id, "run.runtime", p.RuntimeChanged(phase="exited", attempt=1, runtime="local", exit_code=-9), 3),
    ]
    await in_app(client, ingest_group, ctx, group)
    assert await in_app(client, _version, run_id) == before + 1
    stored = (await client.get(f"/v1/runs/{run_id}")).json()
    assert (stored["status"], stored["attempt"]) == ("queued", 2)
    # The run started (announced), then its first attempt died: the second is launched.
    assert [t for t, _ in recorder.sent if t in ("run.started", "worker.launch_run")] == [
        "run.started",
        "worker.launch_run",
    ]
    launch = next(d for t, d in recorder.sent if t == "worker.launch_run")
    assert launch.attempt == 2


async def test_a_model_call_of_a_run_dispatched_here_reads_no_run(client, app) -> None:
    """The dispatching core-api keeps the run's agent: counting a model call by agent reads nothing,
    even right after a write to the run emptied the read cache's runs."""
    from nexus.core_api.metrics import LLM_TOKENS
    from nexus.db.stats import COMMANDS

    run, _, ctx, _ = await _a_run(client, app)
    run_id = run["id"]
    await in_app(client, ingest_group, ctx, [delivery(run_id, "run.status", p.RunStatusChanged(status="running"), 1)])
    finds = COMMANDS.labels("find", "runs", "ok")._value.get()
    tokens = LLM_TOKENS.labels("scripted", "scripted", run["agent_id"], "input")
    before = tokens._value.get()
    calls = [
        p.LLMCalled(step=i, provider="scripted", model="scripted", input_tokens=10 * i, output_tokens=2) for i in (1, 2)
    ]
    await in_app(client, ingest_group, ctx, [delivery(run_id, "run.llm", call, 2 + i) for i, call in enumerate(calls)])
    assert COMMANDS.labels("find", "runs", "ok")._value.get() == finds
    assert tokens._value.get() == before + 30  # both calls counted, by the run's agent


async def test_an_exit_after_the_stored_verdict_is_no_database_command_and_no_stream_look(
    client, app, monkeypatch
) -> None:
    """A trivial run's events one per fetch (a quiet system): launched, running and the verdict are a
    write each; the exit that follows the stored verdict changes nothing, so it is no write, and no
    look at the stream for a verdict (the run as last written holds it)."""
    from nexus.core_api.workflow import runs as run_steps

    looked: list[str] = []
    real = run_steps.verdict_in_stream

    async def counted(ctx, run_id: str, attempt: int):
        looked.append(run_id)
        return await real(ctx, run_id, attempt)

    monkeypatch.setattr(run_steps, "verdict_in_stream", counted)
    run, _, ctx, before = await _a_run(client, app)
    run_id = run["id"]
    events = _trivial_run(run_id)
    for d in events[:-1]:
        await in_app(client, ingest_group, ctx, [d])
    decided = await in_app(client, _version, run_id)
    assert decided == before + 3  # launched, running, succeeded (the log is no write of the run)
    from nexus.db.stats import COMMANDS

    def runs_commands() -> float:
        return sum(COMMANDS.labels(c, "runs", "ok")._value.get() for c in ("find", "update"))

    sent = runs_commands()
    await in_app(client, ingest_group, ctx, [events[-1]])
    assert runs_commands() == sent  # neither written nor read back: the run as last written says it all
    assert await in_app(client, _version, run_id) == decided
    assert looked == []
    stored = (await client.get(f"/v1/runs/{run_id}")).json()
    assert stored["status"] == "succeeded" and stored["attempt"] == 1
    # The exit is still kept among the run's events.
    kept = await in_app(client, run_events.events_of, run_id)
    assert [e.id for e in kept] == [d.envelope.id for d in events]


@pytest.mark.parametrize("ended_by", ["its verdict", "a report of its own"])
async def test_a_session_report_is_no_barrier_between_a_runs_facts(client, app, ended_by: str) -> None:
    """A trivial run's stream as its runner sends it, in one fetch: the session's reports (opened, then
    completed) sit between the run's facts. They move only the session, so the run is still ONE write,
    and the session is inserted in the same round as the events' chunk — and stored before the run's
    end is announced. A runner's verdict carries its session's end (an older runner sent it as a report
    of its own, still ingested): stored the same, one event fewer."""
    from nexus.db.documents import Session
    from nexus.db.stats import COMMANDS

    run, recorder, ctx, before = await _a_run(client, app)
    run_id, sid = run["id"], run["session_id"]
    seen_at_end: list[str | None] = []
    real = recorder.publish

    async def publish(type_: str, data, **options):
        if type_ == "run.succeeded":  # what a reader woken by the end finds
            session = await Session.get(sid)
            seen_at_end.append(session.status if session else None)
        return await real(type_, data, **options)

    recorder.publish = publish  # type: ignore[method-assign]  # observed, then passed on
    opened = {"session_id": sid, "project_path": "/w", "attempt": 1}
    events = [
        ("run.runtime", p.RuntimeChanged(phase="launched", attempt=1, runtime="local", detail="pid 1")),
        ("run.status", p.RunStatusChanged(status="running")),
        ("run.session", p.SessionOpened(**opened)),
        ("run.log", p.RunLog(message="working")),
        ("run.session", p.SessionOpened(**opened, status="completed")),
        ("run.status", p.RunStatusChanged(status="succeeded", summary="done")),
        ("run.runtime", p.RuntimeChanged(phase="exited", attempt=1, runtime="local", exit_code=0)),
    ]
    if ended_by == "its verdict":
        verdict = p.RunStatusChanged(status="succeeded", summary="done", session=events.pop(4)[1])
        events[4] = ("run.status", verdict)

    def inserts() -> tuple[float, ...]:
        return tuple(COMMANDS.labels("insert", c, "ok")._value.get() for c in ("sessions", "run_event_chunks"))

    sent = inserts()
    await in_app(client, ingest_group, ctx, [delivery(run_id, t, d, 1 + i) for i, (t, d) in enumerate(events)])
    assert await in_app(client, _version, run_id) == before + 1  # one write of the run, not one per side
    assert [a - b for a, b in zip(inserts(), sent, strict=True)] == [1, 1]  # the session and one chunk
    assert seen_at_end == ["completed"]
    stored = (await client.get(f"/v1/runs/{run_id}")).json()
    assert stored["status"] == "succeeded"
    kept = await in_app(client, run_events.events_of, run_id)
    assert [e.stream_seq for e in kept] == list(range(1, len(events) + 1))

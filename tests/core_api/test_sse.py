"""SSE resume: a client that reconnects with Last-Event-ID (the JetStream sequence) gets exactly what
it missed, for the system stream and for one run; a disconnect changes no run state."""

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from nexus.core_api.runs.stream import SETTLING
from nexus.events.bus import Publisher, connect
from nexus.events.payloads import RunLog, RunStatusChanged
from tests.core_api.conftest import assert_problem, new_run, store_status
from tests.core_api.test_ui import csrf_of

pytestmark = pytest.mark.infra


async def sse(client: httpx.AsyncClient, path: str, last_id: str | None = None, **params) -> AsyncIterator[dict]:
    """Yields each message (comments too, as {"comment": …}) until the caller stops or the server ends."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    async with client.stream("GET", path, headers=headers, params=params) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        current: dict = {}
        async for line in r.aiter_lines():
            if line == "":
                if current:
                    if current.get("data"):
                        current["data"] = json.loads(current["data"])
                    else:  # litestar sends a comment with an empty data line
                        current.pop("data", None)
                    yield current
                current = {}
            elif line.startswith(":"):
                current["comment"] = line[1:].strip()
            else:
                key, _, value = line.partition(":")
                current[key] = value.lstrip(" ")


async def collect(stream: AsyncIterator[dict], want, limit: int = 5000) -> list[dict]:
    """Read until want(events) holds; bounded by a count of messages, not by time."""
    got: list[dict] = []
    async for msg in stream:
        got.append(msg)
        if want(got) or len(got) >= limit:
            break
    await stream.aclose()  # disconnect
    return got


async def runner_says_succeeded(settings, nats_creds: str, run_id: str) -> None:
    """The runner's final status on the run's stream (what core-api has not stored yet)."""
    nc = await connect(settings.nats_url, "test-sse-runner", creds=nats_creds)
    try:
        await Publisher(nc.jetstream(), "agent-runner").publish(
            "run.status", RunStatusChanged(status="succeeded"), run_id=run_id
        )
    finally:
        await nc.drain()


def goal_ids(msgs: list[dict], mine: set[str]) -> list[str]:
    datas = [m["data"]["data"] for m in msgs if m.get("event") == "goal.created"]
    return [d["goal_id"] for d in datas if isinstance(d, dict) and d.get("goal_id") in mine]


async def test_system_events_resume_after_a_disconnect(http: httpx.AsyncClient) -> None:
    first = (await http.post("/v1/goals", json={"title": "first"})).json()["id"]
    await http.post("/v1/tasks", json={"title": "noise"})  # a task.created the filter must drop
    got = await collect(sse(http, "/v1/events", types="goal.*"), lambda ms: first in goal_ids(ms, {first}))
    assert all(m.get("event", "goal.created").startswith("goal.") for m in got)
    last_id = next(m["id"] for m in got if m.get("event") == "goal.created" and m["data"]["data"]["goal_id"] == first)

    missed = [(await http.post("/v1/goals", json={"title": f"while away {i}"})).json()["id"] for i in range(3)]
    mine = {first, *missed}
    got = await collect(
        sse(http, "/v1/events", last_id, types="goal.created,run.succeeded"),
        lambda ms: len(goal_ids(ms, mine)) == 3 and ms[-1].get("comment") == "keep-alive",
    )
    assert goal_ids(got, mine) == missed  # nothing seen twice, nothing lost, in order
    assert all(int(m["id"]) > int(last_id) for m in got if "id" in m)
    assert got[0]["comment"] == "connected" and got[-1]["comment"] == "keep-alive"
    assert_problem(await http.get("/v1/events", params={"types": "nonsense.happened"}), 422, "types")


async def test_a_poison_message_in_the_stream_ends_no_reader(
    http: httpx.AsyncClient, settings, nats_creds: str
) -> None:
    """Messages that are not envelopes, kept by the stream, are skipped by every reader and every replay."""
    nc = await connect(settings.nats_url, "test-sse-poison", creds=nats_creds)
    try:
        js = nc.jetstream()
        for body in (
            b"not json at all",
            b'{"type": "goal.created"}',
            b"[1, 2, 3]",
            b'{"id": "x", "type": "goal.created", "occurred_at": "t", "source": "s", "data": [1]}',  # data no object
            b'{"id": "y", "type": "goal.created", "occurred_at": "t", "source": "s", "data": {"goal_id": 7}}',
        ):
            await js.publish("nexus.evt.goal.created", body)
        run = await new_run(http)
        await js.publish(
            f"nexus.run.{run['id']}.log",
            b'{"id": "x", "type": "run.status", "occurred_at": "t", "source": "s", "data": [1]}',
        )  # an envelope whose status data is not an object
        await js.publish(
            f"nexus.run.{run['id']}.log",
            b'{"id": "z", "type": "run.log", "occurred_at": "t", "source": "s", "data": "a string"}',
        )  # and a log line's
    finally:
        await nc.drain()
    after = (await http.post("/v1/goals", json={"title": "after the poison"})).json()["id"]
    got = await collect(sse(http, "/v1/events", types="goal.*"), lambda ms: after in goal_ids(ms, {after}))
    assert after in goal_ids(got, {after})  # replayed from the start, past the poison, to the goal
    # A goal's own stream reads every event too: past the poison, to the goal's.
    mine = await collect(sse(http, f"/v1/goals/{after}/events"), lambda ms: after in goal_ids(ms, {after}), 200)
    assert after in goal_ids(mine, {after}), mine[-3:]
    await runner_says_succeeded(settings, nats_creds, run["id"])
    await store_status(settings, run["id"], "succeeded")
    rest = [m async for m in sse(http, f"/v1/runs/{run['id']}/events")]  # skips the poison, ends after the status
    assert [m["event"] for m in rest if "data" in m][-1] == "run.status"
    # The run's page follows the same events: it shows the poison bare and ends with the run.
    async with httpx.AsyncClient(base_url=str(http.base_url), timeout=30) as page:
        r = await page.get("/ui/login")
        r = await page.post("/ui/login", data={"_csrf": csrf_of(r.text), "key": settings.admin_key, "next": "/ui"})
        assert r.status_code == 303, r.text
        async with page.stream("GET", f"/ui/runs/{run['id']}/stream") as r:
            shown = [line async for line in r.aiter_lines() if line.startswith("event:")]  # ends when the server does
    assert shown[-1] == "event: end", shown[-3:]


async def test_run_events_resume_and_end_after_the_final_status(
    http: httpx.AsyncClient, settings, nats_creds: str
) -> None:
    run = await new_run(http)
    nc = await connect(settings.nats_url, "test-sse", creds=nats_creds)
    pub = Publisher(nc.jetstream(), "agent-runner")
    try:
        for i in range(3):
            await pub.publish("run.log", RunLog(message=f"line {i}"), run_id=run["id"])
        got = await collect(sse(http, f"/v1/runs/{run['id']}/events"), lambda ms: sum("data" in m for m in ms) == 2)
        events = [m for m in got if "data" in m]
        assert [e["data"]["data"]["message"] for e in events] == ["line 0", "line 1"]
        # The client went away mid-run: the run is as it was.
        assert (await http.get(f"/v1/runs/{run['id']}")).json()["status"] == run["status"]

        await pub.publish("run.log", RunLog(message="line 3"), run_id=run["id"])
        await pub.publish("run.status", RunStatusChanged(status="succeeded"), run_id=run["id"])
        await store_status(settings, run["id"], "succeeded")
        rest = [m async for m in sse(http, f"/v1/runs/{run['id']}/events", events[-1]["id"])]  # ends by itself
        data = [m for m in rest if "data" in m]
        assert [(m["event"], m["data"]["data"].get("message")) for m in data] == [
            ("run.log", "line 2"),
            ("run.log", "line 3"),
            ("run.status", None),
        ]
        assert [int(m["id"]) for m in data] == sorted(int(m["id"]) for m in data) and int(data[0]["id"]) > int(
            events[-1]["id"]
        )
    finally:
        await nc.drain()


async def test_a_run_stream_ends_once_the_runs_end_is_stored(
    http: httpx.AsyncClient, settings, nats_creds: str
) -> None:
    """The runner's final status is on the stream before core-api stored it: a client that reads the run
    when its stream ended must see it ended, so the stream waits for the store."""
    run = await new_run(http)
    await runner_says_succeeded(settings, nats_creds, run["id"])
    stream = sse(http, f"/v1/runs/{run['id']}/events")
    seen = []
    async for m in stream:
        seen.append(m)
        if m.get("comment") == SETTLING or len(seen) > 50:
            break
    assert seen[-1].get("comment") == SETTLING, seen  # not ended: the run is not stored as ended yet
    assert (await http.get(f"/v1/runs/{run['id']}")).json()["status"] not in ("succeeded", "failed")
    await store_status(settings, run["id"], "succeeded")
    rest = [m async for m in stream]  # ends by itself once the store says so
    assert all("data" not in m for m in rest), rest


async def test_a_run_ended_with_nothing_from_its_runner_ends_its_stream(http: httpx.AsyncClient) -> None:
    """Cancelled before it launched: no runner ever wrote to its stream, and a watcher is not left hanging."""
    run = await new_run(http)
    r = await http.post(f"/v1/runs/{run['id']}/cancel", json={"reason": "not needed"})
    assert r.status_code == 201 and r.json()["status"] == "cancelled", r.text
    got = []
    async for m in sse(http, f"/v1/runs/{run['id']}/events"):
        got.append(m)
        if len(got) > 40:  # keep-alives every 0.5 s: without its end, the stream would go on for ever
            break
    assert len(got) <= 40 and not any("data" in m for m in got), got


async def test_board_card_moves_resume_after_a_disconnect(http: httpx.AsyncClient) -> None:
    task = (await http.post("/v1/tasks", json={"title": "card", "status": "backlog"})).json()["id"]

    def moves(msgs: list[dict]) -> list[str]:
        return [
            m["data"]["data"]["column"]
            for m in msgs
            if m.get("event") == "board.card_moved" and m["data"]["data"]["task_id"] == task
        ]

    got = await collect(sse(http, "/v1/board/events"), lambda ms: moves(ms) == ["backlog"])
    last_id = next(
        m["id"] for m in got if m.get("event") == "board.card_moved" and m["data"]["data"]["task_id"] == task
    )
    r = await http.post(f"/v1/board/cards/{task}/move", json={"column": "failed_cancelled"})
    assert r.status_code == 200, r.text
    # reconnecting after the last move seen gives the next move, not the first one again
    got = await collect(sse(http, "/v1/board/events", last_id=last_id), lambda ms: bool(moves(ms)))
    assert moves(got) == ["failed_cancelled"]


async def test_run_streams_make_no_consumer_of_their_own(http: httpx.AsyncClient, settings, nats_creds: str) -> None:
    """Streams open on three runs at once: their events come from the process's one run feed, so JetStream
    holds no consumer filtered on any of these runs (a stream made one each, and left it for a minute)."""
    runs = [(await new_run(http))["id"] for _ in range(3)]
    streams = [sse(http, f"/v1/runs/{run_id}/events") for run_id in runs]
    for stream in streams:  # each joined and past its replay: it waits with keep-alives
        async for m in stream:
            if m.get("comment") == "keep-alive":
                break
    nc = await connect(settings.nats_url, "test-sse-consumers", creds=nats_creds)
    try:
        filters = {c.config.filter_subject for c in await nc.jetstream().consumers_info("NEXUS_RUNS")}
    finally:
        await nc.drain()
        for stream in streams:
            await stream.aclose()
    assert not filters & {f"nexus.run.{run_id}.>" for run_id in runs}, filters
    assert "nexus.run.>" in filters  # the feed (and core-api's durable ingestion, which this app does not run)

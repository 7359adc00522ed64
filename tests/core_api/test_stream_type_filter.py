"""A system stream filtered by event type (`/v1/events?types=…`, the UI's board, a goal's feed) has the
server skip what it does not follow: its consumer filters on the types' subjects, so a filtered replay of
a long retention reads only its own events, not every run's."""

import httpx
import pytest

from nexus.core_api.runs.stream import TYPED_SUBJECTS, type_subjects
from nexus.events.bus import connect
from nexus.events.catalog import EVENTS_STREAM, MESSAGES
from tests.core_api.test_sse import collect, goal_ids, sse

BASE = "nexus.evt.>"


def test_the_types_become_subjects_none_covering_another() -> None:
    assert type_subjects(BASE, None) is None
    assert type_subjects(BASE, set()) is None
    assert type_subjects(BASE, {"goal.*"}) == ["nexus.evt.goal.>"]
    assert type_subjects(BASE, {"goal.created", "run.succeeded"}) == [
        "nexus.evt.goal.created",
        "nexus.evt.run.succeeded",
    ]
    # JetStream refuses overlapping filters: what a prefix covers is left out.
    assert type_subjects(BASE, {"run.*", "run.status.*", "run.succeeded", "task.created", "runner.x"}) == [
        "nexus.evt.run.>",
        "nexus.evt.runner.x",
        "nexus.evt.task.created",
    ]
    assert type_subjects("nexus.evt.board.card_moved", {"board.card_moved"}) is None  # a subject of one type
    assert type_subjects("elsewhere.>", {"goal.*"}) is None  # another naming: checked by the stream only
    # The rule the filter relies on: every domain event's subject is its type under `nexus.evt.`.
    assert all(m.subject == f"{TYPED_SUBJECTS}{m.type}" for m in MESSAGES if m.stream == EVENTS_STREAM)


@pytest.mark.infra
async def test_a_filtered_replay_is_filtered_by_the_server(http: httpx.AsyncClient, settings, nats_creds: str) -> None:
    nc = await connect(settings.nats_url, "test-stream-filter", creds=nats_creds)
    try:
        js = nc.jetstream()
        for _ in range(300):  # what the stream does not follow, stored before what it does
            await js.publish("nexus.evt.run.noise", b"not an event")
        goal = (await http.post("/v1/goals", json={"title": "filtered"})).json()["id"]
        stream = sse(http, "/v1/events", types="goal.*")
        got = []
        async for msg in stream:  # read to the goal, then look at the consumer while the stream is open
            got.append(msg)
            if goal in goal_ids(got, {goal}):
                break
        infos = [c for c in await js.consumers_info(EVENTS_STREAM) if c.config.filter_subjects]
        total = (await js.stream_info(EVENTS_STREAM)).state.messages
        goals = (await js.stream_info(EVENTS_STREAM, subjects_filter="nexus.evt.goal.>")).state.subjects or {}
        await stream.aclose()
        ours = [c for c in infos if c.config.filter_subjects == ["nexus.evt.goal.>"]]
        assert ours, [c.config for c in infos]
        # It was handed the goals' events and none of the rest.
        assert ours[0].delivered.consumer_seq <= sum(goals.values()) <= total - 300
        again = await collect(
            sse(http, "/v1/events", types="goal.created,run.succeeded"), lambda ms: goal in goal_ids(ms, {goal})
        )
        assert goal in goal_ids(again, {goal})  # exact types: read as well
    finally:
        await nc.drain()

"""A filtered stream (the board's moves, a goal's events) that replays a long history of what its client
does not follow still says something every keep-alive: a client gone is noticed at that write, and one
still there (or a proxy between) is not left in silence for the whole replay."""

import asyncio
import types

import pytest

from nexus.core_api.runs import stream as stream_module
from nexus.core_api.runs.stream import jetstream_events
from nexus.events.envelope import encode, make_envelope
from tests.core_api.test_bus_unavailable import own_nats

SKIPPED = 300
KEEPALIVE_S = 30.0


@pytest.fixture
async def jetstream(tmp_path):
    """A real nats-server of its own with JetStream on, so the test may make a stream of its own."""
    async with own_nats(tmp_path, "-js", "-sd", str(tmp_path / "js")) as nc:
        yield nc


class _Clock:
    """The stream's view of time: a keep-alive's interval passes at every reading, so "a keep-alive is due"
    holds at each check, whatever the box's speed. Waiting (asyncio's timeouts) keeps the real clock."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._now = loop.time()

    def time(self) -> float:
        self._now += KEEPALIVE_S
        return self._now


async def test_a_long_replay_of_unfollowed_events_still_says_keep_alive(jetstream, monkeypatch) -> None:
    js = jetstream.jetstream()
    await js.add_stream(name="KEEPALIVE", subjects=["ka.>"])
    for i in range(SKIPPED):
        await js.publish("ka.task", encode(make_envelope("task.noise", {"i": i}, source="test")))
    await js.publish("ka.board", encode(make_envelope("board.card_moved", {"card": "c1"}, source="test")))

    loop = asyncio.get_running_loop()
    clock = _Clock(loop)
    shim = types.SimpleNamespace(**{name: getattr(asyncio, name) for name in dir(asyncio) if not name.startswith("_")})
    shim.get_running_loop = lambda: clock
    monkeypatch.setattr(stream_module, "asyncio", shim)

    said: list[str] = []
    events = jetstream_events(
        js, "ka.>", after_seq=0, keepalive_s=KEEPALIVE_S, types={"board.card_moved"}, stream="KEEPALIVE"
    )
    try:
        async for m in events:
            if m.event == "board.card_moved":
                break
            said.append(str(m.comment))
    finally:
        await events.aclose()
    # One for each event skipped: the queue never ran dry for 30 s of real time, so none came from waiting.
    assert said[0] == "connected"
    assert said.count("keep-alive") == SKIPPED, said[:5]

"""Requests held open are held by the key that sent them: a revoked key's open event streams end, and
one key cannot hold more than its share of streams or of `wait_s` waits (429 with Retry-After; other
keys are not refused)."""

import asyncio
import contextlib

import httpx
import msgspec
import pytest

from nexus.core_api.settings import CoreSettings
from nexus.events.bus import connect
from nexus.events.catalog import EVENTS_STREAM
from tests.core_api.conftest import assert_problem, bearer, new_run
from tests.core_api.test_sse import sse

pytestmark = pytest.mark.infra
PER_KEY = 3


@pytest.fixture(scope="module")
def settings(settings: CoreSettings) -> CoreSettings:
    return msgspec.structs.replace(settings, sse_streams_per_key=PER_KEY, waits_per_key=PER_KEY)


async def new_key(http: httpx.AsyncClient, role: str = "viewer") -> tuple[str, str]:
    r = await http.post("/v1/api-keys", json={"name": f"streams-{role}", "role": role})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


@pytest.mark.parametrize("path", ["/v1/events", "/v1/board/events", "run"])
async def test_a_revoked_keys_open_stream_ends(http: httpx.AsyncClient, server_url: str, path: str) -> None:
    if path == "run":
        path = f"/v1/runs/{(await new_run(http))['id']}/events"
    key_id, key = await new_key(http)
    async with httpx.AsyncClient(base_url=server_url, headers=bearer(key), timeout=30) as viewer:
        stream = sse(viewer, path)
        assert (await anext(stream))["comment"] == "connected"
        assert (await http.delete(f"/v1/api-keys/{key_id}")).status_code == 204
        rest, keepalives = [], 0
        # Bounded by a count of keep-alives (one every 0.5 s), not by time nor by events: the board's
        # stream replays its history first, and what the server wrote before the revocation (any
        # number of events, in the socket's buffers) is still read after it.
        async for m in stream:
            rest.append(m)
            keepalives += "comment" in m
            if keepalives > 40:
                break
        await stream.aclose()
        assert rest and rest[-1]["event"] == "error", rest[-3:]
        assert "revoked" in rest[-1]["data"]["error"]
        assert_problem(await viewer.get(path), 401)


async def _stream_end(nats_url: str, nats_creds: str) -> str:
    """The events stream's last sequence, as a Last-Event-ID: a stream opened after it replays nothing."""
    nc = await connect(nats_url, "tests", creds=nats_creds)
    try:
        return str((await nc.jetstream().stream_info(EVENTS_STREAM)).state.last_seq)
    finally:
        await nc.close()


async def test_one_key_holds_a_bounded_number_of_streams(
    http: httpx.AsyncClient, server_url: str, nats_url: str, nats_creds: str
) -> None:
    _, key = await new_key(http)
    # Each stream starts at the stream's end: from its start, each would replay every event the whole suite
    # made before this test (once seen holding the closed stream's slot past every retry on a loaded box).
    end = await _stream_end(nats_url, nats_creds)
    async with (
        httpx.AsyncClient(base_url=server_url, headers=bearer(key), timeout=30) as greedy,
        contextlib.AsyncExitStack() as held,
    ):
        streams = []
        for _ in range(PER_KEY):
            s = sse(greedy, "/v1/events", end, types="goal.*")
            held.push_async_callback(s.aclose)
            assert (await anext(s))["comment"] == "connected"
            streams.append(s)
        r = await greedy.get("/v1/events")
        body = assert_problem(r, 429, "Authorization")
        assert int(r.headers["Retry-After"]) > 0 and "event streams" in body["detail"]
        # Another key is not refused for this one's streams.
        other = sse(http, "/v1/events", end, types="goal.*")
        assert (await anext(other))["comment"] == "connected"
        await other.aclose()
        # A stream closed gives its slot back.
        await streams.pop().aclose()
        for _ in range(300):  # the server sees the disconnect at its next write (a keep-alive)
            again = sse(greedy, "/v1/events", end, types="goal.*")
            try:
                assert (await anext(again))["comment"] == "connected"
                break
            except AssertionError:
                await again.aclose()
                await asyncio.sleep(0.1)
        else:
            pytest.fail("a closed stream's slot was never given back")
        await again.aclose()


async def test_one_key_holds_a_bounded_number_of_waits(http: httpx.AsyncClient, server_url: str) -> None:
    run = await new_run(http)  # no worker: it stays queued until cancelled
    _, key = await new_key(http, "lead")
    async with contextlib.AsyncExitStack() as clients:
        greedy, *waiting = [
            await clients.enter_async_context(httpx.AsyncClient(base_url=server_url, headers=bearer(key), timeout=60))
            for _ in range(PER_KEY + 1)
        ]

        def wait(c: httpx.AsyncClient) -> asyncio.Task[httpx.Response]:
            return asyncio.create_task(c.get(f"/v1/runs/{run['id']}", params={"wait_s": 50}))

        waits = [wait(c) for c in waiting]
        for _ in range(100):  # until the server holds its share (bounded by tries)
            r = await greedy.get(f"/v1/runs/{run['id']}", params={"wait_s": 0.05})
            if r.status_code == 429:
                break
            # A wait that came while this probe held a slot was refused: it asks again.
            waits = [
                wait(c) if w.done() and w.result().status_code == 429 else w
                for c, w in zip(waiting, waits, strict=True)
            ]
        body = assert_problem(r, 429, "Authorization")
        assert int(r.headers["Retry-After"]) > 0 and "wait_s" in body["detail"]
        title = f"refused-{run['id']}"
        r = await greedy.post("/v1/tasks", params={"wait_s": 5}, json={"title": title})
        assert_problem(r, 429, "Authorization")  # refused before anything was made
        listed = (await http.get("/v1/tasks", params={"limit": 500})).json()["items"]
        assert title not in [t["title"] for t in listed]
        assert (await http.get(f"/v1/runs/{run['id']}", params={"wait_s": 0.1})).status_code == 200  # another key
        assert (await http.post(f"/v1/runs/{run['id']}/cancel")).status_code in (201, 202)
        assert all(w.status_code == 200 for w in await asyncio.gather(*waits))  # ended: their slots are back
        assert (await greedy.get(f"/v1/runs/{run['id']}", params={"wait_s": 1})).status_code == 200

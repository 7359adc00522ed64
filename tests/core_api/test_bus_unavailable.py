"""When NATS cannot answer (no JetStream leader, a lost connection): an event stream waits and then ends
with an `error` event the client reconnects after, and a request is a 503 with Retry-After, never a 500."""

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.aio.client
import nats.errors
import nats.js.errors
import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from nexus.core_api.errors import EXCEPTION_HANDLERS
from nexus.events.bus import BUS_UNAVAILABLE
from nexus.core_api.runs.stream import RECONNECT_MS, STREAM_ERROR, jetstream_events
from nexus.dev.servers import Managed, _spawn, find_tool, free_port, wait_port


@contextlib.asynccontextmanager
async def own_nats(tmp_path: Path, *options: str) -> AsyncIterator[nats.aio.client.Client]:
    """A real nats-server of the test's own (its `options` added), and a connection to it."""
    port = free_port()
    proc, log = _spawn([find_tool("nats-server"), "-a", "127.0.0.1", "-p", str(port), *options], tmp_path / "nats.log")
    server = Managed("nats-own", proc, f"nats://127.0.0.1:{port}", log)
    wait_port("127.0.0.1", port, proc=proc)
    nc = await nats.connect(server.url)
    try:
        yield nc
    finally:
        await nc.close()
        server.stop()


@pytest.fixture
async def without_jetstream(tmp_path):
    """A real nats-server with JetStream off: every JetStream API request goes unanswered."""
    async with own_nats(tmp_path) as nc:
        yield nc


async def test_a_stream_that_cannot_open_ends_with_an_error_event(without_jetstream) -> None:
    messages = [
        m
        async for m in jetstream_events(
            without_jetstream.jetstream(timeout=0.5), "nexus.run.x.>", after_seq=0, keepalive_s=5, open_wait_s=1.5
        )
    ]
    assert messages[0].comment == "connected"
    assert any(m.comment == "waiting for the event stream" for m in messages[1:-1])
    last = messages[-1]
    assert last.event == STREAM_ERROR
    assert last.retry == RECONNECT_MS
    assert "reconnect" in json.loads(str(last.data))["error"]


@pytest.mark.parametrize("error", BUS_UNAVAILABLE, ids=lambda e: e.__name__)
async def test_a_request_the_bus_cannot_answer_is_a_503(error: type[Exception]) -> None:
    @get("/needs-the-bus", sync_to_thread=False)
    def needs_the_bus() -> None:
        raise error()

    app = Litestar([needs_the_bus], exception_handlers=EXCEPTION_HANDLERS)  # type: ignore[arg-type]
    async with AsyncTestClient(app) as client:
        r = await client.get("/needs-the-bus")
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "2"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"] == "the message bus did not answer; try again shortly"


async def test_a_jetstream_error_that_is_not_an_outage_stays_a_500() -> None:
    @get("/bad", sync_to_thread=False)
    def bad() -> None:
        raise nats.js.errors.BadRequestError(code=400, description="bad request")

    app = Litestar([bad], exception_handlers=EXCEPTION_HANDLERS)  # type: ignore[arg-type]
    async with AsyncTestClient(app) as client:
        r = await client.get("/bad")
    assert r.status_code == 500
    assert "bad request" not in r.text

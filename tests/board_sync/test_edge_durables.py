"""An edge service's durables are kept: board-sync's subscribers, served through `Edge.serve` as its NATS
user against a real nats-server, get a durable someone deleted made again, handle what was published
meanwhile, and the service says not ready while a durable is missing."""

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable

import pytest
from nats.js.errors import NotFoundError

from nexus.board_sync.handlers import DURABLES, register
from nexus.events.bus import Publisher
from nexus.events.catalog import EVENTS_STREAM
from nexus.events.consumer import LOOPS
from nexus.events.faststream import durables_down, edge
from nexus.events.payloads import BoardExternalChanged
from tests.board_sync.test_handlers import RecordingSyncer
from tests.conftest import creds_of
from tests.events.test_permissions import tools  # noqa: F401 — the fixture: the tests' own connection

pytestmark = pytest.mark.infra


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30.0) -> None:
    """Wait (bounded) until `check()` holds; polls state, asserts nothing about time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _exists(js, name: str) -> bool:
    try:
        await js.consumer_info(EVENTS_STREAM, name)
    except NotFoundError:
        return False
    return True


async def test_a_deleted_durable_of_an_edge_service_is_made_again(nats_url: str, nats_auth, tools) -> None:
    js = tools.jetstream()
    for name in DURABLES:  # start from none, as a fresh deployment does
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(EVENTS_STREAM, name)
    syncer = RecordingSyncer()
    stop = asyncio.Event()
    item = f"item-{uuid.uuid4().hex}"
    async with edge(nats_url, "board-sync", creds_of(nats_auth, "board-sync")) as bus:
        register(bus.broker, syncer, stop, backoff_s=0.01, max_deliver=5)  # type: ignore[arg-type]  # a recording syncer stands in
        serving = asyncio.create_task(bus.serve(stop))
        try:
            await until(lambda: _exists(js, "board-sync-external"), "the durable made at start")
            await until(lambda: _true(bus.ready()), "ready once every durable exists")
            await js.delete_consumer(EVENTS_STREAM, "board-sync-external")
            change = BoardExternalChanged(provider="plane", delivery_id=item, event="issue", item_id=item)
            await Publisher(js, "test").publish("board.external_changed", change)
            await until(lambda: _true(item in syncer.external), "the change handled by the durable made again")
            assert bus.ready() and not durables_down(bus.broker), LOOPS.down
        finally:
            stop.set()
            await asyncio.wait_for(serving, 30)
    for name in DURABLES:  # leave the shared server as found
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(EVENTS_STREAM, name)


async def test_a_missing_durable_makes_the_edge_not_ready(nats_url: str, nats_auth) -> None:
    async with edge(nats_url, "board-sync", creds_of(nats_auth, "board-sync")) as bus:
        register(bus.broker, RecordingSyncer(), asyncio.Event(), backoff_s=0.01, max_deliver=5)  # type: ignore[arg-type]  # a recording syncer stands in
        assert bus.ready()
        LOOPS.down["board-sync-runs"] = "durable consumer missing: test"
        try:
            assert not bus.ready() and durables_down(bus.broker) == ["board-sync-runs"]
        finally:
            LOOPS.down.pop("board-sync-runs", None)
        assert bus.ready()


async def _true(value: bool) -> bool:
    return value

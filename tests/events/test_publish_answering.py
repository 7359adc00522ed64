"""A publish made while someone waits for an answer (`answering`, core-api's HTTP requests) does not wait
for a bus that is out of reach: it raises what BUS_UNAVAILABLE lists at once, where a publish elsewhere
rides out the absence (up to 30 s), and the same publish goes through once the bus is back."""

import asyncio

import nats.errors
import pytest

from nexus.dev.servers import start_nats
from nexus.events.bus import BUS_UNAVAILABLE, Publisher, answering, connect, ensure_streams
from nexus.events.payloads import RunLog

pytestmark = pytest.mark.infra


async def test_a_publish_someone_waits_on_does_not_wait_for_a_bus_out_of_reach(tmp_path) -> None:
    server = start_nats(tmp_path / "nats")
    port = int(server.url.rsplit(":", 1)[1])
    nc = await connect(server.url, "test-answering")
    try:
        await ensure_streams(nc.jetstream())
        publisher = Publisher(nc.jetstream(), "test")
        with answering():
            await publisher.publish("run.log", RunLog(message="the bus is here"), run_id="run_a")
        server.stop(keep_data=True)
        for _ in range(200):  # until the client has seen the server go
            if not nc.is_connected:
                break
            await asyncio.sleep(0.05)
        with answering(), pytest.raises(BUS_UNAVAILABLE) as raised:
            await publisher.publish("run.log", RunLog(message="nobody to take it"), run_id="run_a")
        # Not the 30 s wait's timeout: the request was refused without waiting.
        assert isinstance(raised.value, nats.errors.ConnectionReconnectingError)
        server = start_nats(tmp_path / "nats", port=port)
        with answering(None):  # the background's full wait: it rides out the reconnect
            await publisher.publish("run.log", RunLog(message="back"), run_id="run_a")
    finally:
        await nc.close()
        server.stop()

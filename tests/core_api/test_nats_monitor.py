"""core-api reads NATS's monitoring endpoint (/varz, /jsz) of the real test nats-server into its own families:
connections per server, messages and bytes per JetStream stream; an endpoint that does not answer says so
(nexus_nats_monitor_up 0) without stopping the others."""

import uuid

import httpx
import pytest
from prometheus_client import REGISTRY

from nexus.core_api.nats_monitor import NatsMonitor, endpoints
from nexus.dev.servers import free_port, monitor_for
from nexus.events.bus import connect, ensure_streams
from nexus.events.catalog import DLQ_STREAM

pytestmark = pytest.mark.infra


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_endpoints_setting_is_a_comma_separated_list() -> None:
    assert endpoints(" http://a:8222/, http://b:8222 ,,") == ["http://a:8222", "http://b:8222"]
    assert endpoints("") == []


async def test_connections_and_streams_come_from_the_monitoring_endpoint(nats_url: str, nats_creds: str) -> None:
    monitor_url = monitor_for(nats_url)
    if not monitor_url:
        pytest.skip("the test nats-server was started elsewhere (NEXUS_TEST_NATS_URL): its monitoring port is unknown")
    nc = await connect(nats_url, f"monitor-test-{uuid.uuid4().hex[:6]}", creds=nats_creds, user="tools")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        await js.publish(f"nexus.dlq.monitor-test.{uuid.uuid4().hex[:6]}", b"counted")
        before = (await js.stream_info(DLQ_STREAM)).state
        async with httpx.AsyncClient(timeout=3) as client:
            await NatsMonitor([monitor_url, dead]).read(client)
            varz = (await client.get(f"{monitor_url}/varz")).json()
        after = (await js.stream_info(DLQ_STREAM)).state  # another test's dead letter may land in between
    finally:
        await nc.close()

    server = varz["server_name"]
    messages = sample("nexus_nats_stream_messages", server=server, account="NEXUS", stream=DLQ_STREAM)
    assert messages is not None and 1 <= before.messages <= messages <= after.messages
    size = sample("nexus_nats_stream_bytes", server=server, account="NEXUS", stream=DLQ_STREAM)
    assert size is not None and 0 < before.bytes <= size <= after.bytes
    assert sample("nexus_nats_connections", server=server) >= 1  # this test's own connection at least
    assert sample("nexus_nats_monitor_up", endpoint=monitor_url) == 1
    assert sample("nexus_nats_monitor_up", endpoint=dead) == 0

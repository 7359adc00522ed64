"""The edge frame (board-sync's and telegram-gateway's main): while it stands, the lag of the
durable consumers its NATS user owns is exported, as the other services export theirs."""

import asyncio
import contextlib

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from prometheus_client import REGISTRY

from nexus.events.bus import connect, ensure_streams
from nexus.events.faststream import edge
from nexus.events.lag import PENDING
from nexus.events.permissions import GATEWAY_DURABLES
from tests.conftest import creds_of

pytestmark = pytest.mark.infra


def _pending(stream: str, consumer: str) -> float | None:
    return REGISTRY.get_sample_value("nexus_consumer_pending_messages", {"stream": stream, "consumer": consumer})


async def test_the_edge_exports_the_lag_of_its_users_consumers(nats_url: str, nats_auth, nats_creds: str) -> None:
    tools = await connect(nats_url, "test-edge", creds=nats_creds)
    js = tools.jetstream()
    await ensure_streams(js)
    durable = next(d for d in GATEWAY_DURABLES if d.filter == "nexus.evt.goal.>")
    try:
        # A fresh durable: the session's server may hold one an earlier test's gateway made, with a pull
        # request of that gateway still waiting on it (until it expires), which takes what is published next.
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(durable.stream, durable.name)
        await js.add_consumer(
            durable.stream,
            ConsumerConfig(
                durable_name=durable.name,
                filter_subject=durable.filter,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.NEW,
            ),
        )
        await js.publish("nexus.evt.goal.status_changed", b"{}")  # waiting: nobody pulls this durable here
        waiting = (await js.consumer_info(durable.stream, durable.name)).num_pending
        assert waiting >= 1
        PENDING.labels(durable.stream, durable.name).set(0)  # only the edge's own export may set it
        async with edge(nats_url, "telegram-gateway", creds_of(nats_auth, "telegram-gateway")):
            for _ in range(200):  # the first export is at once; bounded wait for it to land
                if (_pending(durable.stream, durable.name) or 0) >= 1:
                    break
                await asyncio.sleep(0.05)
            assert (_pending(durable.stream, durable.name) or 0) >= 1
    finally:
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(durable.stream, durable.name)
        await tools.drain()

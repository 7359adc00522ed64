"""Lag of the durable consumers a service owns, read from JetStream's consumer info and exported by that
service: it works wherever the service runs (`make run` included), with no NATS exporter beside the server."""

import asyncio
import logging

from nats.js import JetStreamContext
from prometheus_client import Gauge

from nexus.events.permissions import BOARD_SYNC_DURABLES, CORE_API_DURABLES, GATEWAY_DURABLES, WORKER_DURABLES, Durable
from nexus.observability.periodic import every

log = logging.getLogger("nexus.events.lag")

OWNED: dict[str, list[Durable]] = {
    "core-api": CORE_API_DURABLES,
    "worker": WORKER_DURABLES,
    "board-sync": BOARD_SYNC_DURABLES,
    "telegram-gateway": GATEWAY_DURABLES,
}
LABELS = ["stream", "consumer"]
PENDING = Gauge(
    "nexus_consumer_pending_messages", "Messages stored and not yet delivered to the durable consumer (its lag)", LABELS
)
ACK_PENDING = Gauge(
    "nexus_consumer_ack_pending_messages", "Messages delivered to the durable consumer and not yet acknowledged", LABELS
)
REDELIVERED = Gauge(
    "nexus_consumer_redelivered_messages", "Messages delivered more than once and not yet acknowledged", LABELS
)


async def export_lag(js: JetStreamContext, durables: list[Durable]) -> None:
    """Set the gauges from each consumer's info; a consumer not created yet is skipped."""
    for d in durables:
        try:
            info = await js.consumer_info(d.stream, d.name)
        except Exception:  # not created yet, or NATS reconnecting: the next round reads it
            log.debug("no consumer info for %s/%s", d.stream, d.name, exc_info=True)
            continue
        PENDING.labels(d.stream, d.name).set(info.num_pending or 0)
        ACK_PENDING.labels(d.stream, d.name).set(info.num_ack_pending or 0)
        REDELIVERED.labels(d.stream, d.name).set(info.num_redelivered or 0)


async def watch_consumer_lag(js: JetStreamContext, service: str, stop: asyncio.Event, every_s: float = 30.0) -> None:
    """Until `stop`: export the lag of `service`'s durable consumers at once, then every `every_s` seconds (a
    gauge for dashboards and alerts: each round asks the server once per durable, which is not free at rest)."""
    durables = OWNED[service]
    await every(every_s, stop, lambda: export_lag(js, durables), what=f"{service} consumer lag", at_start=True)

"""What every service's main() shares: settings common to all, logging, tracing, the ops port, signals."""

import asyncio
import signal

import msgspec

from nexus.observability.health import OpsServer, ReadyCheck
from nexus.observability.logs import setup_logging
from nexus.observability.tracing import setup_tracing


class CommonSettings(msgspec.Struct, kw_only=True):
    nats_url: str = "nats://127.0.0.1:4222"
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9100
    log_level: str = "info"
    log_format: str = "json"
    otlp_endpoint: str | None = None
    # JetStream streams and KV buckets: 1 on one machine, 3 on a three-node production cluster.
    jetstream_replicas: int = 1


def bootstrap(service: str, settings: CommonSettings) -> None:
    setup_logging(service, settings.log_level, settings.log_format)
    setup_tracing(service, settings.otlp_endpoint)


def stop_event_on_signals() -> asyncio.Event:
    """SIGTERM/SIGINT set the returned event: services drain and exit cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def start_ops(settings: CommonSettings, ready: ReadyCheck | None) -> OpsServer:
    ops = OpsServer(settings.metrics_host, settings.metrics_port, ready)
    await ops.start()
    return ops

"""What every service's main() shares: settings common to all, logging, tracing, the ops port, signals."""

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable

import msgspec

from nexus.observability.health import OpsServer, ReadyCheck
from nexus.observability.inspection import close_to_inspection
from nexus.observability.logs import setup_logging
from nexus.observability.tracing import setup_tracing


class CommonSettings(msgspec.Struct, kw_only=True):
    nats_url: str = "nats://127.0.0.1:4222"
    nats_creds: str = ""  # this service's NATS user: a .creds file (nexus.events.credentials); empty: no auth
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9100
    log_level: str = "info"
    log_format: str = "json"
    otlp_endpoint: str | None = None
    # JetStream streams and KV buckets: 1 on one machine, 3 on a three-node production cluster.
    jetstream_replicas: int = 1


def bootstrap(service: str, settings: CommonSettings) -> None:
    close_to_inspection()  # every service holds credentials; a process of its user must not read them
    setup_logging(service, settings.log_level, settings.log_format)
    setup_tracing(service, settings.otlp_endpoint)


def child_observability_env(settings: CommonSettings) -> dict[str, str]:
    """What a process this service starts (a run's runner) needs to log and trace like it does."""
    env = {"NEXUS_LOG_FORMAT": settings.log_format}
    if settings.otlp_endpoint:
        env["NEXUS_OTLP_ENDPOINT"] = settings.otlp_endpoint
    return env


def stop_event_on_signals(grace_s: float = 20.0) -> asyncio.Event:
    """SIGTERM/SIGINT set the returned event: services drain and exit cleanly. A service that has
    not exited `grace_s` later (a stuck loop, a hung connection) exits anyway: SIGTERM always stops it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        stop.set()
        timer = threading.Timer(grace_s, _exit_now, args=(grace_s,))
        timer.daemon = True
        timer.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    return stop


def _exit_now(grace_s: float) -> None:
    sys.stderr.write(f"still running {grace_s:.0f}s after a stop signal: exiting now\n")
    sys.stderr.flush()
    os._exit(1)


async def start_ops(
    settings: CommonSettings, ready: ReadyCheck | None, detail: Callable[[], str] | None = None
) -> OpsServer:
    ops = OpsServer(settings.metrics_host, settings.metrics_port, ready, detail)
    await ops.start()
    return ops

"""NATS's own numbers — client connections per server, messages and bytes each JetStream stream holds — read
from each nats-server's monitoring endpoint (`/varz`, `/jsz`) every 30 seconds and exported by core-api as its
own families, beside the consumer lag it reads from consumer info. No exporter process is needed next to the
server (under `make run` the stack starts nats-server with its monitoring port and hands core-api its URL).

`NEXUS_NATS_MONITOR_URL` names the endpoints, comma-separated (one per server of a cluster); empty: off."""

import asyncio
import logging

import httpx
from prometheus_client import Gauge

from nexus.observability.periodic import every

log = logging.getLogger("nexus.core_api.nats_monitor")

CONNECTIONS = Gauge("nexus_nats_connections", "Clients connected to each NATS server (its /varz)", ["server"])
STREAM_MESSAGES = Gauge(
    "nexus_nats_stream_messages",
    "Messages each JetStream stream holds, as each server reports it (its /jsz)",
    ["server", "account", "stream"],
)
STREAM_BYTES = Gauge(
    "nexus_nats_stream_bytes",
    "Bytes each JetStream stream holds, as each server reports it (its /jsz)",
    ["server", "account", "stream"],
)
MONITOR_UP = Gauge(
    "nexus_nats_monitor_up",
    "Whether core-api's last read of a NATS server's monitoring endpoint succeeded",
    ["endpoint"],
)
_STREAM_GAUGES = (STREAM_MESSAGES, STREAM_BYTES)


def endpoints(setting: str) -> list[str]:
    return [u.strip().rstrip("/") for u in setting.split(",") if u.strip()]


Streams = dict[tuple[str, str], tuple[int, int]]  # (account, stream) → (messages, bytes)


async def read_server(client: httpx.AsyncClient, endpoint: str) -> tuple[str, int, Streams]:
    """(server name, connections, streams) of one server."""
    varz = (await client.get(f"{endpoint}/varz")).raise_for_status().json()
    details = {"accounts": "true", "streams": "true"}
    jsz = (await client.get(f"{endpoint}/jsz", params=details)).raise_for_status().json()
    streams: Streams = {}
    for account in jsz.get("account_details") or []:
        for s in account.get("stream_detail") or []:
            state = s.get("state") or {}
            streams[(account.get("name") or account.get("id", ""), s["name"])] = (
                int(state.get("messages", 0)),
                int(state.get("bytes", 0)),
            )
    return str(varz.get("server_name") or varz.get("server_id", endpoint)), int(varz.get("connections", 0)), streams


class NatsMonitor:
    """Reads every endpoint and sets the gauges; a stream that went away loses its series."""

    def __init__(self, urls: list[str], timeout_s: float = 3.0) -> None:
        self.urls = urls
        self.timeout_s = timeout_s
        self._streams: set[tuple[str, str, str]] = set()

    async def read(self, client: httpx.AsyncClient) -> None:
        results = await asyncio.gather(*(read_server(client, u) for u in self.urls), return_exceptions=True)
        seen: set[tuple[str, str, str]] = set()
        for url, result in zip(self.urls, results, strict=True):
            if isinstance(result, BaseException):
                log.debug("NATS monitoring at %s unreadable: %s", url, result)
                MONITOR_UP.labels(url).set(0)
                continue
            server, connections, streams = result
            MONITOR_UP.labels(url).set(1)
            CONNECTIONS.labels(server).set(connections)
            for (account, stream), (messages, size) in streams.items():
                STREAM_MESSAGES.labels(server, account, stream).set(messages)
                STREAM_BYTES.labels(server, account, stream).set(size)
                seen.add((server, account, stream))
        answered = {str(r[0]) for r in results if not isinstance(r, BaseException)}
        for gone in {g for g in self._streams - seen if g[0] in answered}:  # an unreadable server keeps its last
            for gauge in _STREAM_GAUGES:
                gauge.remove(*gone)
            self._streams.discard(gone)
        self._streams |= seen

    async def watch(self, stop: asyncio.Event, every_s: float = 5.0) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            await every(every_s, stop, lambda: self.read(client), what="NATS monitoring", at_start=True)


async def watch_nats_monitor(setting: str, stop: asyncio.Event, every_s: float = 30.0) -> None:
    """Until `stop`: export NATS's monitoring numbers at once, then every `every_s` seconds (nothing when
    `setting` is empty). Dashboard gauges: a read of /varz and /jsz costs nats-server more than most requests."""
    urls = endpoints(setting)
    if not urls:
        log.info("NATS monitoring not read: NEXUS_NATS_MONITOR_URL is not set")
        return
    log.info("reading NATS monitoring from %s", ", ".join(urls))
    await NatsMonitor(urls).watch(stop, every_s)

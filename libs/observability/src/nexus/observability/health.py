"""The ops port every service has: /metrics (Prometheus), /healthz (alive), /readyz (dependencies up)."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("nexus.observability.health")
ReadyCheck = Callable[[], Awaitable[bool]]


async def _respond(writer: asyncio.StreamWriter, status: str, body: bytes, ctype: str = "text/plain") -> None:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()


class OpsServer:
    def __init__(
        self, host: str, port: int, ready: ReadyCheck | None = None, detail: Callable[[], str] | None = None
    ) -> None:
        self.host, self.port, self.ready, self.detail = host, port, ready, detail  # detail: more lines for /readyz
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else "/"
            if path == "/metrics":
                await _respond(writer, "200 OK", generate_latest(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                await _respond(writer, "200 OK", b"ok\n")
            elif path == "/readyz":
                ok = True
                if self.ready is not None:
                    try:
                        ok = await asyncio.wait_for(self.ready(), 2)
                    except Exception:  # noqa: BLE001 — any failure means not ready
                        ok = False
                body = b"ready\n" if ok else b"not ready\n"
                if self.detail is not None:
                    body += self.detail().encode() + b"\n"
                await _respond(writer, "200 OK" if ok else "503 Service Unavailable", body)
            else:
                await _respond(writer, "404 Not Found", b"not found\n")
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        log.info("ops endpoints on http://%s:%d (/metrics /healthz /readyz)", self.host, self.port)

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()

"""`uv run python -m bench.api.request_calls [--requests 2000]`: what core-api's app costs one request in
Python, counted exactly and timed: a trivial route (no auth, no database, no bus) registered on the real
app, called in-process as granian calls it (five headers and a caller's `traceparent`), in a process that
records no span (no exporter, as core-api runs without one). Prints the Python calls per request
(`sys.setprofile`, exact whatever the load) and the CPU-µs per request (`time.process_time`)."""

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from litestar import Litestar, get

from nexus.core_api.app import create_app
from nexus.core_api.settings import CoreSettings
from nexus.domain.settings import load_settings
from nexus.observability.tracing import setup_tracing

HEADERS = [
    (b"host", b"core-api"),
    (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    (b"user-agent", b"bench"),
    (b"accept", b"*/*"),
    (b"content-type", b"application/json"),
]


@get("/bench-probe", exclude_from_auth=True)
async def probe() -> dict[str, bool]:
    return {"ok": True}


async def one(app: Litestar) -> None:
    scope: Any = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/bench-probe",
        "raw_path": b"/bench-probe",
        "query_string": b"",
        "root_path": "",
        "headers": HEADERS,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "state": {},
    }
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"the probe answered {sent[0]['status']}")


async def measure(requests: int) -> dict[str, float]:
    setup_tracing("core-api", None)
    app = create_app(load_settings(CoreSettings, {}), background=False)
    app.register(probe)
    for _ in range(50):  # warm: first-call caches of litestar and the middleware
        await one(app)
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(count)
    for _ in range(200):
        await one(app)
    sys.setprofile(None)
    t0 = time.process_time()
    for _ in range(requests):
        await one(app)
    return {"python_calls_per_request": calls / 200, "cpu_us_per_request": 1e6 * (time.process_time() - t0) / requests}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api.request_calls")
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.requests))))


if __name__ == "__main__":
    main()

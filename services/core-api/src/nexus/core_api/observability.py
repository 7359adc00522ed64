"""HTTP metrics per route template (never per raw path, so ids do not explode label cardinality), and a server
span per request from litestar's own OpenTelemetry integration (it continues a caller's `traceparent`)."""

import time

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Histogram

REQUESTS = Counter("nexus_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "nexus_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


def _route(scope: Scope) -> str:
    return str(scope.get("path_template") or "unmatched")


class HttpMetricsMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, send_wrapper)
        finally:
            route = _route(scope)
            method = scope.get("method", "")
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - start)


def tracing_plugin() -> OpenTelemetryPlugin:
    """One SERVER span per request, named by its route template; probes are not traced, and the ASGI
    receive/send sub-spans are left out (they say nothing the server span does not)."""
    return OpenTelemetryPlugin(
        OpenTelemetryConfig(
            exclude=["^/healthz$", "^/readyz$", "^/metrics$"],
            exclude_spans=["receive", "send"],
            scopes={ScopeType.HTTP},
            http_capture_headers_sanitize_fields=["authorization", "x-api-key", "x-telegram-bot-api-secret-token"],
        )
    )

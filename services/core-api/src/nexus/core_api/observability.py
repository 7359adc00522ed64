"""HTTP metrics per route template (never per raw path, so ids do not explode label cardinality), and a server
span per request from litestar's own OpenTelemetry integration (it continues a caller's `traceparent`). A
process that records no span (no exporter) continues the caller's trace without that integration."""

import time

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Histogram

from nexus.observability.tracing import context_from_headers, records_nothing, unrecorded

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


# The headers OpenTelemetry's propagators read (W3C trace context and baggage), as ASGI names them.
_PROPAGATED = frozenset({b"traceparent", b"tracestate", b"baggage"})


class UnrecordedTrace(ASGIMiddleware):
    """A request's current span where nothing is recorded: the non-recording span the SDK would give under
    its ALWAYS_OFF sampler, continuing the caller's `traceparent` and baggage (the ids reach the logs and every message
    the request publishes), without OpenTelemetry's ASGI middleware. That one builds a server span's
    attributes, decodes every header and records its metrics per request: ~440 Python calls per trivial
    run, ~2 % of core-api's CPU, all for a span nobody keeps (docs/throughput.md)."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        carrier = {name.decode(): value.decode("latin-1") for name, value in scope["headers"] if name in _PROPAGATED}
        parent = context_from_headers(carrier) if carrier else None
        with unrecorded(parent):
            await next_app(scope, receive, send)


def request_tracing() -> tuple[list[OpenTelemetryPlugin], list[ASGIMiddleware]]:
    """The plugins and the outermost middleware that trace requests: OpenTelemetry's where spans are recorded
    (decided when the app is made: the process's tracer provider is installed before), ours where not."""
    if records_nothing():
        return [], [UnrecordedTrace()]
    return [tracing_plugin()], []


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

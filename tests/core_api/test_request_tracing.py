"""A core-api that records no span (no exporter) continues a caller's trace without OpenTelemetry's ASGI
middleware. Its span is the SDK's ALWAYS_OFF one: the caller's trace and state, not sampled, a span id of
its own. The caller's baggage is kept, and the request never enters the middleware that would build a
span nobody keeps. Run in a fresh process: a process installs one tracer provider."""

import json
import subprocess
import sys

SCRIPT = """
import json
from litestar import get
from litestar.testing import TestClient
from opentelemetry import baggage, trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from nexus.core_api.app import create_app
from nexus.core_api.settings import CoreSettings
from nexus.domain.settings import load_settings
from nexus.observability.tracing import setup_tracing

setup_tracing("core-api", None)
entered = []
original = OpenTelemetryMiddleware.__call__
async def spy(self, *args):
    entered.append(1)
    return await original(self, *args)
OpenTelemetryMiddleware.__call__ = spy


@get("/probe-span", exclude_from_auth=True)
async def probe() -> list:
    c = trace.get_current_span().get_span_context()
    return [format(c.trace_id, "032x"), format(c.span_id, "016x"), int(c.trace_flags), c.trace_state.to_header(),
            dict(baggage.get_all())]


app = create_app(load_settings(CoreSettings, {}), background=False)
app.register(probe)
client = TestClient(app)  # no lifespan: the route reaches neither the database nor the bus
parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
continued = client.get("/probe-span", headers={"traceparent": parent, "tracestate": "vendor=x", "baggage": "tenant=t1"}).json()
started = client.get("/probe-span").json()
print(json.dumps({"continued": continued, "started": started, "entered": len(entered)}))
"""


def test_a_request_continues_its_callers_trace_without_the_asgi_middleware_where_nothing_is_recorded() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], timeout=120, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["entered"] == 0  # OpenTelemetry's ASGI middleware was not on the request's path
    trace_id, span_id, flags, state, carried = seen["continued"]
    assert trace_id == "0af7651916cd43dd8448eb211c80319c" and state == "vendor=x" and flags == 0
    assert carried == {"tenant": "t1"}  # the caller's baggage goes on to what the request publishes
    assert span_id not in ("b7ad6b7169203331", "0" * 16)  # a span of its own, as the SDK's would be
    assert seen["started"][0] not in (trace_id, "0" * 32)  # no caller's trace: a new one

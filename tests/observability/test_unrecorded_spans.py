"""In a process that records no span (no exporter) a span is made without the SDK: the same
non-recording span its ALWAYS_OFF sampler gives — not sampled, continuing the parent's trace and trace
state, a span id of its own — current while it is open. Run in a fresh process: a process installs one
tracer provider."""

import json
import subprocess
import sys

SCRIPT = """
import json
from opentelemetry import trace
from nexus.events.tracing import processing, processing_group
from nexus.observability.tracing import context_from_env, records_nothing, setup_tracing, span

provider = setup_tracing("unrecorded", None)


class NoSdk:
    def start_as_current_span(self, *args, **kwargs):
        raise AssertionError("the SDK was asked for a span nobody records")


def facts(s):
    c = s.get_span_context()
    return [format(c.trace_id, "032x"), format(c.span_id, "016x"), int(c.trace_flags), c.trace_state.to_header(),
            c.is_remote, s.is_recording()]


env = {"TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "TRACESTATE": "vendor=x"}
parent = context_from_env(env)
out = {"quiet": records_nothing()}
with span(NoSdk(), "run", context=parent) as s:
    out["ours"] = facts(s)
    out["current"] = trace.get_current_span() is s
    with span(NoSdk(), "inner") as inner:
        out["inner"] = facts(inner)
out["after"] = trace.get_current_span().get_span_context().is_valid
out["sdk"] = facts(provider.get_tracer("x").start_span("run", context=parent))
with span(NoSdk(), "alone") as a, span(NoSdk(), "alone again") as b:
    out["alone"] = [facts(a), facts(b)]
headers = {"traceparent": env["TRACEPARENT"]}
with processing("nexus.run.run_x.status", headers, consumer="c") as p, processing_group(["nexus.run.run_x.log"], [headers], consumer="c") as g:
    out["consumed"] = [facts(p), facts(g)]
print(json.dumps(out))
"""


def test_a_span_nobody_records_is_made_as_the_sdk_makes_it_without_the_sdk() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], check=True, timeout=60, capture_output=True, text=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["quiet"] is True
    trace_id, parent_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    ours, sdk = seen["ours"], seen["sdk"]
    # The trace, its state, the flags (not sampled), local, not recording: as the SDK's; a span id of its own.
    assert ours[0] == sdk[0] == trace_id and ours[2:] == sdk[2:] == [0, "vendor=x", False, False]
    assert ours[1] not in (parent_span, "0" * 16)
    assert seen["current"] is True and seen["after"] is False
    assert seen["inner"][0] == trace_id and seen["inner"][1] != ours[1]  # a child continues it
    (a, b) = seen["alone"]
    assert a[0] != "0" * 32 and a[0] == b[0] and a[1] != b[1]  # a trace started, then continued
    assert all(c[0] == trace_id and c[1] != parent_span and not c[5] for c in seen["consumed"])

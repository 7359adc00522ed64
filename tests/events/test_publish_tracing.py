"""A publish's PRODUCER span, with and without an exporter. Without one nothing is recorded, so a publish
inside a span makes no span of its own: its message carries the current span's context (the trace
still continues at the consumer). Outside any span, and whenever spans are exported, each publish has
its own span, as before. Each case runs in a fresh process: a process installs one tracer provider."""

import json
import subprocess
import sys

import pytest

from nexus.dev.otlp import OtlpReceiver

SCRIPT = """
import json, sys
from nexus.events.tracing import publishing
from nexus.observability.tracing import records_nothing, setup_tracing, span, tracer
setup_tracing("publisher", sys.argv[1] or None)
inside, outside = {}, {}
with span(tracer("publisher"), "run") as run:
    with publishing("nexus.run.run_x.status", inside, msg_id="m1") as own:
        made_one = own is not run
    ctx = run.get_span_context()
with publishing("nexus.run.run_x.status", outside, msg_id="m2"):
    pass
print(json.dumps({
    "quiet": records_nothing(), "made_one": made_one, "run": [format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")],
    "inside": inside.get("traceparent", ""), "outside": outside.get("traceparent", ""),
}))
"""


def _publish_in_a_fresh_process(endpoint: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, endpoint], check=True, timeout=60, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_without_an_exporter_a_publish_in_a_span_carries_that_span() -> None:
    seen = _publish_in_a_fresh_process("")
    assert seen["quiet"] is True
    assert seen["made_one"] is False
    assert seen["inside"].split("-")[1:3] == seen["run"]  # the consumer continues from the run's span
    # Outside any span a publish still starts a trace of its own for the consumer to continue.
    assert seen["outside"] and seen["outside"].split("-")[1] != seen["run"][0]


@pytest.fixture
def receiver():
    r = OtlpReceiver().start()
    yield r
    r.stop()


def test_with_an_exporter_every_publish_has_its_own_span(receiver) -> None:
    seen = _publish_in_a_fresh_process(receiver.endpoint)
    assert seen["quiet"] is False
    assert seen["made_one"] is True
    trace_id, span_id = seen["inside"].split("-")[1:3]
    assert trace_id == seen["run"][0] and span_id != seen["run"][1]  # a PRODUCER span, the run's child

"""The shared setup every process uses: log lines carry run_id, trace_id and span_id (JSON in production, text
locally); trace context crosses to a child process in TRACEPARENT; spans leave over OTLP/HTTP only when an
endpoint is set, in the real wire format (received here by the same receiver the end-to-end test uses)."""

import json
import logging
import os
import subprocess
import sys

import pytest

from nexus.dev.otlp import OtlpReceiver
from nexus.observability.logs import JsonFormatter, TextFormatter, about_run
from nexus.observability.tracing import (
    context_from_env,
    flush_tracing,
    setup_tracing,
    span,
    traceparent_env,
    traces_url,
    tracer,
)


@pytest.fixture(scope="module")
def receiver():
    r = OtlpReceiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def provider(receiver):
    """One provider per process (OpenTelemetry allows one): this module's, exporting to the receiver."""
    return setup_tracing("observability-test", receiver.endpoint)


def record(message: str = "hello") -> logging.LogRecord:
    return logging.LogRecord("nexus.test", logging.INFO, __file__, 1, message, None, None)


def test_a_line_inside_a_span_and_a_run_carries_all_three_ids(provider) -> None:
    with span(tracer("test"), "work") as s, about_run("run_123"):
        line = json.loads(JsonFormatter("worker").format(record()))
        text = TextFormatter("worker").format(record())
        ctx = s.get_span_context()
    ids = {"run_id": "run_123", "trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
    assert {k: line[k] for k in ids} == ids and line["service"] == "worker" and line["msg"] == "hello"
    assert text.endswith(" [" + " ".join(f"{k}={v}" for k, v in ids.items()) + "]")


def test_a_line_outside_carries_none() -> None:
    line = json.loads(JsonFormatter("worker").format(record()))
    assert not {"run_id", "trace_id", "span_id"} & set(line)
    assert "trace_id" not in TextFormatter("worker").format(record())


def test_a_traceback_formatted_before_the_handler_stays_on_the_line() -> None:
    """The runner masks a traceback into exc_text before any handler formats the record."""
    r = record()
    r.exc_text = "Traceback: ValueError: ****"
    assert json.loads(JsonFormatter("agent-runner").format(r))["exc"] == "Traceback: ValueError: ****"


def test_a_run_id_is_scoped_to_its_block() -> None:
    with about_run("run_1"):
        assert json.loads(JsonFormatter("x").format(record()))["run_id"] == "run_1"
    assert "run_id" not in json.loads(JsonFormatter("x").format(record()))


def test_traceparent_hands_the_current_span_to_a_child_process(provider) -> None:
    with span(tracer("test"), "launch") as parent:
        env = traceparent_env()
    assert set(env) == {"TRACEPARENT"} and env["TRACEPARENT"].split("-")[1] == format(
        parent.get_span_context().trace_id, "032x"
    )
    with span(tracer("test"), "child", context=context_from_env(env)) as child:
        assert child.get_span_context().trace_id == parent.get_span_context().trace_id
        assert child.parent.span_id == parent.get_span_context().span_id
    assert traceparent_env() == {}  # outside a span there is nothing to hand on
    with span(tracer("test"), "root", context=context_from_env({})) as root:
        assert root.parent is None


def test_an_error_marks_the_span(provider, receiver) -> None:
    with pytest.raises(KeyError), span(tracer("test"), "fails"):
        raise KeyError("x")
    flush_tracing()
    (failed,) = [
        s
        for s in receiver.wait_for(lambda spans: any(s.name == "fails" for s in spans), timeout_s=10)
        if s.name == "fails"
    ]
    assert failed.status_code == 2 and failed.attributes["error.type"] == "KeyError"  # STATUS_CODE_ERROR
    assert failed.service == "observability-test"


def test_the_endpoint_gains_the_traces_path_once() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"


CHILD = """
import sys
from nexus.observability.tracing import flush_tracing, setup_tracing, span, tracer
setup_tracing("child", sys.argv[1] or None)
with span(tracer("child"), "in the child"):
    pass
flush_tracing()
"""


@pytest.mark.parametrize("with_endpoint", [False, True], ids=["no endpoint", "endpoint"])
def test_spans_leave_only_when_an_endpoint_is_set(receiver, with_endpoint) -> None:
    """A process flushes, then exits: whatever it exported has arrived by then."""
    before = [s for s in receiver.spans if s.service == "child"]
    subprocess.run([sys.executable, "-c", CHILD, receiver.endpoint if with_endpoint else ""], check=True, timeout=60)
    after = [s for s in receiver.spans if s.service == "child"]
    assert len(after) - len(before) == (1 if with_endpoint else 0)


UNRECORDED = """
import json, os, sys
from nexus.observability.tracing import context_from_env, ids, setup_tracing, span, traceparent_env, tracer
setup_tracing("child", None)
with span(tracer("child"), "outer", context=context_from_env(os.environ)) as s:
    trace_id, span_id = ids()
    print(json.dumps({"recording": s.is_recording(), "trace_id": trace_id, "span_id": span_id,
                      "next_hop": traceparent_env().get("TRACEPARENT", "")}))
"""


def test_without_an_endpoint_spans_are_not_recorded_but_keep_their_ids_and_context() -> None:
    """Nothing is exported without an endpoint, so nothing is recorded; the logs' ids and the trace's
    continuation across processes stay."""
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    out = subprocess.run(
        [sys.executable, "-c", UNRECORDED],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
        env={**os.environ, "TRACEPARENT": parent},
    ).stdout
    seen = json.loads(out)
    assert seen["recording"] is False
    assert seen["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and seen["span_id"] not in (None, "b7ad6b7169203331")
    assert seen["next_hop"].split("-")[1:3] == [seen["trace_id"], seen["span_id"]]

"""The rehearsal run the runner zygote plays before it forks (nexus.agent_runner.rehearsal): a real
trivial run against a stand-in for NATS inside the process — four events published and acknowledged —
that leaves nothing a child must not inherit: no thread, no descriptor, no event loop, the process's
signal handlers and log filters as they were, and no tracer provider: a child that then installs its
own (with an exporter) gets every span, the modules' own tracers' included. Played in a process of
its own (as the zygote is), since it is about process-wide state."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, logging, os, signal, sys, threading
from nexus.worker.runtimes.zygote import preload
preload()
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as the zygote's main() leaves it
root_filters = [list(h.filters) for h in logging.getLogger().handlers]
fds = sorted(os.listdir("/proc/self/fd"))
from nexus.agent_runner import rehearsal
published = []
ack = rehearsal._StandIn._ack
def counted(self, writer, reply):
    published.append(reply)
    ack(self, writer, reply)
rehearsal._StandIn._ack = counted
code = rehearsal.rehearse()
import opentelemetry.trace as otel_trace
seen = {
    "code": code,
    "acks": len(published),
    "threads": threading.active_count(),
    "fds_unchanged": sorted(os.listdir("/proc/self/fd")) == fds,
    "sigterm_ignored": signal.getsignal(signal.SIGTERM) == signal.SIG_IGN,
    "wakeup_fd": signal.set_wakeup_fd(-1),
    "filters_unchanged": [list(h.filters) for h in logging.getLogger().handlers] == root_filters,
    "provider_installed": otel_trace._TRACER_PROVIDER is not None,
    "stderr_is_ours": os.path.samestat(os.fstat(2), os.stat(os.environ["STDERR_PATH"])),
}
# A child installs its own provider, with an exporter: the modules' tracers made before must reach it.
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
otel_trace.set_tracer_provider(provider)
from nexus.agent_runner.hypervisor import core
from nexus.agent_runner import loop
from nexus.observability.tracing import span, tracer
for name, t in (("hypervisor", core.TRACER), ("loop", loop.TRACER), ("helper", tracer("nexus.agent_runner"))):
    with span(t, name):
        pass
seen["exported"] = sorted(s.name for s in exporter.get_finished_spans())
print(json.dumps(seen))
"""


def test_the_rehearsal_runs_a_real_run_and_leaves_nothing_behind(tmp_path: Path) -> None:
    stderr = tmp_path / "stderr"
    with open(stderr, "wb") as err:
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            env={**os.environ, "STDERR_PATH": str(stderr)},
            stdout=subprocess.PIPE,
            stderr=err,
            check=True,
            timeout=120,
        ).stdout
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen.pop("exported") == ["helper", "hypervisor", "loop"], stderr.read_text()
    assert seen == {
        "code": 0,
        "acks": 4,  # running, the session opened, the model call, succeeded (the session's end rides on it)
        "threads": 1,
        "fds_unchanged": True,
        "sigterm_ignored": True,
        "wakeup_fd": -1,
        "filters_unchanged": True,
        "provider_installed": False,
        "stderr_is_ours": True,
    }, stderr.read_text()
    assert "rehearsal" not in stderr.read_text()  # its log lines went nowhere


HUNG = r"""
import asyncio, json, os, signal, threading
from nexus.worker.runtimes.zygote import preload, warm_per_run_work
preload()
signal.signal(signal.SIGTERM, signal.SIG_IGN)
from nexus.agent_runner import rehearsal
async def silent(self, reader, writer):  # a stand-in that never says INFO: the client waits for ever
    await asyncio.sleep(3600)
rehearsal._StandIn.serve = silent
rehearsal.REHEARSAL_TIMEOUT_S = 0.5
before = rehearsal.rehearsed
warm_per_run_work()  # as the zygote calls it: a failed warm-up is said, never fatal
import opentelemetry.trace as otel_trace
print(json.dumps({
    "rehearsed": rehearsal.rehearsed - before,
    "threads": threading.active_count(),
    "sigterm_ignored": signal.getsignal(signal.SIGTERM) == signal.SIG_IGN,
    "provider_installed": otel_trace._TRACER_PROVIDER is not None,
}))
"""


def test_a_rehearsal_that_hangs_is_given_up_and_the_zygote_goes_on(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", HUNG], capture_output=True, check=True, timeout=120)
    seen = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert seen == {"rehearsed": 0, "threads": 1, "sigterm_ignored": True, "provider_installed": False}
    assert b"could not warm a rehearsal run" in done.stderr

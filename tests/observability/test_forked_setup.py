"""What a process that forks runners (the warm zygote) sets up once for its children: the log handler
a child would make is kept when it is the same, and the tracer provider of a process without an
exporter costs a forked child nothing at fork time (the SDK's own hook looks the process's resource
up again in every child of a process holding a provider). Logging and tracing are process-wide, so
the tracing cases run in fresh processes."""

import json
import logging
import subprocess
import sys

import pytest

from nexus.observability.logs import JsonFormatter, TextFormatter, setup_logging


@pytest.fixture
def root_handlers():
    root = logging.getLogger()
    kept, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = kept
    root.setLevel(level)
    logging.getLogger("nexus.kernel").setLevel(logging.NOTSET)


def test_the_same_handler_is_kept_and_a_different_one_replaced(root_handlers) -> None:
    setup_logging("agent-runner", "info", "json")
    (first,) = root_handlers.handlers
    setup_logging("agent-runner", "info", "json")
    assert root_handlers.handlers == [first]  # inherited by a forked runner: not made again
    setup_logging("agent-runner", "info", "text")
    (text,) = root_handlers.handlers
    assert text is not first and isinstance(text.formatter, TextFormatter)
    setup_logging("worker", "info", "text")
    (other,) = root_handlers.handlers
    assert other is not text and "worker" in other.formatter._fmt  # type: ignore[union-attr]
    other.addFilter(logging.Filter("x"))  # a handler with a filter (a run's masking) is never taken over
    setup_logging("worker", "info", "text")
    (fresh,) = root_handlers.handlers
    assert fresh is not other and not fresh.filters and isinstance(fresh.formatter, TextFormatter)
    setup_logging("worker", "info", "json")
    assert isinstance(root_handlers.handlers[0].formatter, JsonFormatter)


def test_quiet_loggers_say_only_warnings(root_handlers) -> None:
    setup_logging("agent-runner", "debug", "json", quiet=("nexus.kernel",))
    kernel = logging.getLogger("nexus.kernel")
    assert not kernel.isEnabledFor(logging.INFO) and kernel.isEnabledFor(logging.WARNING)
    assert logging.getLogger("nexus.agent_runner").isEnabledFor(logging.DEBUG)


FORK = """
import json, os
import opentelemetry.sdk.trace as sdk_trace
from nexus.observability.tracing import quiet_provider, records_nothing, setup_tracing
provider = quiet_provider("zygote-test")
looked_up = []
real = sdk_trace._get_process_dependent_resource
sdk_trace._get_process_dependent_resource = lambda: looked_up.append(1) or real()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    setup_tracing("zygote-test", None)  # what a child without an exporter does: installs the zygote's provider
    os.write(w, json.dumps({"looked_up": len(looked_up), "installed": records_nothing()}).encode())
    os._exit(0)
os.close(w)
print(os.read(r, 1000).decode())
os.waitpid(pid, 0)
"""


def test_a_child_forked_from_a_process_holding_the_quiet_provider_installs_it_for_free() -> None:
    out = subprocess.run([sys.executable, "-c", FORK], check=True, timeout=60, capture_output=True, text=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"looked_up": 0, "installed": True}


WARM_TRACERS = """
import json, os
from nexus.observability import tracing
tracing.warm("zygote-test", ("nexus.agent_runner",))
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    provider = tracing.setup_tracing("zygote-test", None)
    asked = []
    real = provider.get_tracer
    provider.get_tracer = lambda *a, **k: asked.append(a) or real(*a, **k)
    made = tracing.tracer("nexus.agent_runner")
    os.write(w, json.dumps({"asked_the_sdk": len(asked), "warm": made is real("nexus.agent_runner")}).encode())
    os._exit(0)
os.close(w)
print(os.read(r, 1000).decode())
os.waitpid(pid, 0)
"""


def test_a_forked_child_finds_the_tracers_its_zygote_warmed_without_asking_the_sdk() -> None:
    # The SDK's get_tracer, even for a tracer it holds, compares scopes and sets a warnings filter: ~0.2 ms
    # and ~40 page faults of every forked run.
    out = subprocess.run([sys.executable, "-c", WARM_TRACERS], check=True, timeout=60, capture_output=True, text=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"asked_the_sdk": 0, "warm": True}

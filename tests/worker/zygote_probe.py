"""What a child forked by the runner zygote sees of itself, written where PROBE_OUT says: the
zygote tests run this in place of agent-runner's main to read the child's environment and limits."""

import gc
import json
import os
import resource
import sys
import threading
import time

OTLP_EXPORTER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def _warm() -> dict:
    """What the child inherited from the zygote's warm-up instead of doing it again."""
    sandbox = sys.modules.get("nexus.agent_runner.hypervisor.sandbox")
    tracing = sys.modules.get("nexus.observability.tracing")
    rehearsal = sys.modules.get("nexus.agent_runner.rehearsal")
    return {
        "sandbox_probed": bool(sandbox and sandbox.detect.cache_info().currsize),
        "tracing_resources": len(tracing._resources) if tracing else 0,
        "frozen_objects": gc.get_freeze_count(),
        "rehearsals": rehearsal.rehearsed if rehearsal else 0,
        # what the zygote imported (None: marked never to be imported)
        "modules": {
            name: "absent" if name not in sys.modules else "blocked" if sys.modules[name] is None else "loaded"
            for name in ("httpx", "httpx._main", "click", "tornado", OTLP_EXPORTER)
        },
    }


def _config(environ: dict[str, str]) -> str | None:
    """The run's config as the runner reads it (NEXUS_RUN_CONFIG), as the run's user."""
    path = environ.get("NEXUS_RUN_CONFIG")
    if not path:
        return None
    with open(path) as f:
        return f.read()


def _relay(environ: dict[str, str]) -> dict | None:
    """The run's end of the worker's relay, if it was given one: said hello through, and whether a
    process it executes would inherit it."""
    if "NEXUS_RELAY_FD" not in environ:
        return None
    fd = int(environ["NEXUS_RELAY_FD"])
    os.write(fd, b"hello from the run")
    return {"fd": fd, "inheritable": os.get_inheritable(fd)}


def report(environ: dict[str, str]) -> int:
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))  # the listing itself holds one
    seen = {
        "env": dict(os.environ),
        "given": environ,
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
        "cwd": os.getcwd(),
        "fds": fds,
        "threads": threading.active_count(),
        "limits": {
            name: list(resource.getrlimit(getattr(resource, name)))
            for name in ("RLIMIT_AS", "RLIMIT_NOFILE", "RLIMIT_CPU")
        },
        "warm": _warm(),
        "config": _config(environ),
        "relay": _relay(environ),
    }
    with open(environ["PROBE_OUT"], "w") as f:
        json.dump(seen, f)
    return int(environ.get("PROBE_EXIT", "0"))


def hold(env: dict[str, str]) -> int:
    """A child that only lives a while, as a trivial run does (the zygote's own page-fault test)."""
    time.sleep(float(env.get("HOLD_S", "1")))
    return 0

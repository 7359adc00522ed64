"""The warm runner zygote: a process that imports agent-runner once and forks one child per run.

A cold runner spends ~0.45 CPU-s importing before it does anything; a fork of an already warm
process costs a few milliseconds. The zygote is started by the worker (`zygote_client.py`) with
the scrubbed environment every run gets, runs no event loop and no thread, and speaks
newline-delimited JSON over its stdin (a Unix socket, so a request can carry a descriptor) and stdout:

    worker → zygote   {"id": 7, "cwd": …, "log": …, "env_file": …, "limits": [mb, files, cpu_s], "uid": 0, "gid": 0,
                       "entry": "module:function" (optional; agent-runner's by default),
                       "relay": true (optional: the run's end of the worker's relay rides with the request)}
    zygote → worker   {"ready": <pid>} once, then {"id": 7, "pid": 1234} or {"id": 7, "error": "…"},
                      and {"exit": 1234, "code": 0} when a child ends (code: -N for signal N).

The child becomes the run exactly as the cold path makes it: a session and process group of its
own, the run's rlimits, its attempt directory as cwd, stdin from /dev/null and stdout/stderr to
runner.log, every inherited descriptor closed, the run's identity when one is given, and an
environment made only of what the worker wrote for it. The run's environment (it carries the
run's secrets) never passes through the zygote: the worker writes it to `env_file` (0600), with the run's
config after it, and the child claims it by renaming it to `<env_file>.<pid>`, reads it and leaves in it
only the config, which its NEXUS_RUN_CONFIG then names. The rename is also
the launch's single point of no return: a worker that lost its zygote mid-request voids the file
first, and only then may it start the run cold — never both (see `claim_env`).

A request marked `relay` carries (SCM_RIGHTS) the run's end of a socket pair whose other end the worker
keeps: the child holds it as descriptor 3, not inherited by what it executes, and NEXUS_RELAY_FD names
it; its run's publishes ride the worker's NATS connection (worker runtimes/relay.py)."""

import _signal
import _thread
import collections
import contextlib
import gc
import importlib
import json
import os
import pkgutil
import resource
import select
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from typing import cast

import msgspec

from nexus.domain.json_types import JsonObject
from nexus.observability.inspection import close_to_inspection

LAZY_IMPORTS = (
    "yaml",
    "opentelemetry.propagate",
    "nexus.domain.ids",
    "nexus.domain.settings",
    "nexus.events.bus",
    "nexus.kernel.kernel",
    "nexus.kernel.remote",
    "nexus.kernel.supervision",
    "nexus.kernel.watchdog",
    "nexus.kernel.asks",
    "nats.aio.client",
    "nkeys",
    "shutil",
    "signal",
    # tracing: the SDK (no thread starts before a provider is set up)
    "nexus.events.tracing",
    "opentelemetry.sdk.trace",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk.resources",
)
# The OTLP exporter (~150 ms of imports, ~2.5 MiB): preloaded only when the zygote's runs export
# (NEXUS_OTLP_ENDPOINT in the environment every run gets, the zygote's too).
EXPORTER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
# What libraries import only for what a run never does: httpx's command line (click, rich, pygments)
# and tenacity's tornado support (tornado, curses). Marked absent before anything is imported, each
# library takes its own fallback (as when those are not installed), and the zygote is ~5 MiB smaller:
# every MiB it holds cost every run ~65 µs here (load ~20): the fork copies its page table, the exit frees it.
NEVER_IN_A_RUN = ("httpx._main", "tornado")
DEFAULT_ENTRY = "nexus.agent_runner.main:start"  # called with the run's environment; returns the exit code
MADV_COLLAPSE = 25  # Linux 6.1+: back a range with huge pages now (not left to khugepaged), THP mode madvise or always
HUGE_PAGE = 2 << 20


def preload() -> int:
    """Import every agent-runner module (what a cold runner imports lazily, and the providers).
    Returns how many modules were imported."""
    import asyncio  # noqa: F401 — the runner's loop, built fresh in each child
    import logging  # noqa: F401 — as asyncio: imported once here, not in every child

    import nexus.agent_runner as pkg

    count = 0
    # What the runner and the libraries it uses import lazily (each would cost every child again).
    exporting = bool(os.environ.get("NEXUS_OTLP_ENDPOINT"))
    for name in (*LAZY_IMPORTS, EXPORTER) if exporting else LAZY_IMPORTS:
        try:
            importlib.import_module(name)
            count += 1
        except ImportError as exc:
            print(f"zygote: could not preload {name}: {exc}", file=sys.stderr)
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
            count += 1
        except Exception as exc:  # noqa: BLE001 — an optional provider that cannot import is imported (and fails) in the child
            print(f"zygote: could not preload {info.name}: {exc}", file=sys.stderr)
    try:  # what every run computes the same way: computed once here, inherited by every child
        importlib.import_module("nexus.agent_runner.hypervisor.core")  # imports (registers) every tool
        importlib.import_module("nexus.agent_runner.hypervisor.registry").warm()
    except Exception as exc:  # noqa: BLE001 — a child computes it itself
        print(f"zygote: could not warm the tool schemas: {exc}", file=sys.stderr)
    warm_per_run_work()
    return count


def _warm_tracing() -> None:
    # The tracers a run's modules ask for (agent-runner's and the bus's): made once, found by each child.
    importlib.import_module("nexus.observability.tracing").warm("agent-runner", ("nexus.agent_runner", "nexus.events"))


def _warm_decoders() -> None:
    import msgspec

    from nexus.agent_runner.settings import RunnerSettings
    from nexus.events.envelope import Envelope, RawEnvelope
    from nexus.events.payloads import RunConfig

    for kind in (RunConfig, RunnerSettings, Envelope, RawEnvelope):  # msgspec keeps each type's layout on the type
        msgspec.json.Decoder(kind)


def _warm_logging() -> None:
    # The levels a runner sets (each setLevel walks every logger the preloaded modules made).
    quiet = importlib.import_module("nexus.agent_runner.lifecycle").QUIET_LOGGERS
    importlib.import_module("nexus.observability.logs").setup_logging("agent-runner", "info", "json", quiet=quiet)


def warm_per_run_work() -> None:
    """Work every forked runner would repeat identically, done once here (each child inherits the
    result): the tracing resource (its detectors start two threads) and tracer set-up, the decoders
    of the run config and envelopes, the logging levels, and the command sandbox's probe (one `bwrap`
    process). The probe's answer holds for children running as the zygote's own user; a child that
    drops to another identity forgets it and probes as that user (`_become`)."""
    for what, warm in (
        ("tracing", _warm_tracing),
        ("the decoders", _warm_decoders),
        ("logging", _warm_logging),
        ("the sandbox probe", lambda: importlib.import_module("nexus.agent_runner.hypervisor.sandbox").detect("auto")),
        ("a rehearsal run", _rehearse),
    ):
        try:
            warm()
        except Exception as exc:  # noqa: BLE001 — a child computes it itself
            print(f"zygote: could not warm {what}: {exc}", file=sys.stderr)


def _rehearse() -> None:
    """One trivial run played here (agent-runner's rehearsal, against a stand-in for NATS in this
    process) so that what CPython writes on first use — specialised bytecode, the type-attribute
    cache, version tags, lazy caches — is written once here, not copied page by page into every
    child. `NEXUS_ZYGOTE_REHEARSAL=false` leaves it out."""
    if os.environ.get("NEXUS_ZYGOTE_REHEARSAL", "true").lower() in ("0", "false", "no", "off"):
        return
    code = importlib.import_module("nexus.agent_runner.rehearsal").rehearse()
    if code != 0:
        print(f"zygote: the rehearsal run ended with {code}", file=sys.stderr)
    if threading.active_count() != 1:  # never: the zygote refuses to fork with a thread alive
        print("zygote: the rehearsal run left a thread behind", file=sys.stderr)


def collapse_heap() -> int:
    """Back the zygote's private anonymous memory (the malloc heap, Python's arenas) with huge pages
    where 2 MiB-aligned stretches of it exist; the bytes now in huge pages. Why: a fork copies one page
    table entry per 4 KiB page the zygote has mapped and a child's exit takes every one down again; a
    huge page is one entry for 2 MiB. Measured here, fork and exit of an empty child each ~25 % cheaper.
    A child's first write in a huge page splits only its own mapping and copies 4 KiB, as before.
    Best effort: a kernel without MADV_COLLAPSE, or THP set to never, leaves the memory as it was.
    `NEXUS_ZYGOTE_HUGEPAGES=false` leaves it out."""
    if os.environ.get("NEXUS_ZYGOTE_HUGEPAGES", "true").lower() in ("0", "false", "no", "off"):
        return 0
    import ctypes

    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    collapsed = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if fields[1] != "rw-p" or fields[5:] not in ([], ["[heap]"]):  # private anonymous only (no stack)
                continue
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            for start in range(-(-lo // HUGE_PAGE) * HUGE_PAGE, hi // HUGE_PAGE * HUGE_PAGE, HUGE_PAGE):
                collapsed += HUGE_PAGE if madvise(start, HUGE_PAGE, MADV_COLLAPSE) == 0 else 0
    return collapsed


def claim_env(env_file: str, claimant: str) -> str | None:
    """Take the run's environment file by renaming it to `<env_file>.<claimant>`; None if someone
    else (the child, or the worker voiding it) took it first. Exactly one rename can win."""
    taken = f"{env_file}.{claimant}"
    try:
        os.rename(env_file, taken)
    except FileNotFoundError:
        return None
    return taken


def _take_launch(taken: str, uid: int, gid: int) -> dict[str, str]:
    """Read the claimed launch file (`<env JSON>\\n<run config>`) and keep on disk only the run's config, in the
    same file (the runner's NEXUS_RUN_CONFIG names it): the secrets the environment carried now live only in
    this process. The config comes this way, not as a file of its own, to spare the worker an inode per launch."""
    fd = os.open(taken, os.O_RDWR)
    try:
        data = b""
        while chunk := os.read(fd, 1 << 20):
            data += chunk
        env_part, _, config = data.partition(b"\n")  # JSON's own newlines are escaped: the first one ends the env
        env: dict[str, str] = json.loads(env_part)
        os.ftruncate(fd, 0)
        if config:
            view = memoryview(config)
            while view:
                view = view[os.pwrite(fd, view, len(config) - len(view)) :]
            if uid:
                os.fchown(fd, uid, gid)  # read by the runner once it is the run's user
            env["NEXUS_RUN_CONFIG"] = os.path.abspath(taken)
    finally:
        os.close(fd)
    return env


RELAY_FD = 3  # where a child keeps its end of the relay


def _keep_relay(relay: int | None) -> int:
    """The relay's end moved to RELAY_FD, not inherited across exec (a command the run starts never holds
    it); the first descriptor the child may close."""
    if relay is None:
        return RELAY_FD
    if relay != RELAY_FD:
        os.dup2(relay, RELAY_FD, inheritable=False)
    os.set_inheritable(RELAY_FD, False)
    return RELAY_FD + 1


def _become(req: JsonObject, relay: int | None = None) -> int:
    """In the forked child: turn into the run, then run agent-runner's main. Returns the exit code."""
    signal.set_wakeup_fd(-1)
    # Through `_signal` (under `signal`): `signal.signal` looks the replaced disposition up as an enum,
    # which for the zygote's own handler is a failed lookup, an exception, in every child.
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        _signal.signal(sig, _signal.SIG_DFL)
    _signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()
    log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    first_closed = _keep_relay(relay)
    # the zygote's pipes and anything else inherited
    os.closerange(first_closed, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.chdir(req["cwd"])
    taken = claim_env(req["env_file"], str(os.getpid()))
    if taken is None:
        print("zygote child: the run's environment was withdrawn; not starting", file=sys.stderr)
        return 125
    env = _take_launch(taken, int(req.get("uid") or 0), int(req.get("gid") or req.get("uid") or 0))
    if relay is not None:
        env["NEXUS_RELAY_FD"] = str(RELAY_FD)
    memory_mb, open_files, cpu_s = req["limits"]
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024, memory_mb * 1024 * 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
    if req.get("uid"):
        os.setgroups([])
        os.setgid(int(req.get("gid") or req["uid"]))
        os.setuid(int(req["uid"]))
        _forget_probes()  # what the zygote found out as its own user may not hold for this one
    os.environ.clear()
    os.environ.update(env)
    module, _, function = req.get("entry", DEFAULT_ENTRY).partition(":")
    # an entry point (agent-runner's main) returns the process's exit code
    return cast(int, getattr(importlib.import_module(module), function)(dict(os.environ)))


def _forget_probes() -> None:
    sandbox = sys.modules.get("nexus.agent_runner.hypervisor.sandbox")
    if sandbox is not None:
        sandbox.detect.cache_clear()


def _entry_loaded(req: JsonObject) -> None:
    """The entry's module imported here, once, before the fork: a child that drops to another user
    may not be able to read the code, and no child should import it again."""
    module = str(req.get("entry", DEFAULT_ENTRY)).partition(":")[0]
    if module not in sys.modules:
        with contextlib.suppress(Exception):  # the child imports it again and reports why it cannot
            importlib.import_module(module)


def _fork(req: JsonObject, relay: int | None) -> int:
    _entry_loaded(req)
    pid = os.fork()
    if pid:
        return pid
    code = 126
    try:
        code = _become(req, relay)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 — whatever happens, the child never returns into the zygote's loop
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            import logging

            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    return -1  # unreachable


def _send(out: int, msg: JsonObject) -> None:
    _write(out, json.dumps(msg).encode() + b"\n")


def _write(out: int, data: bytes) -> None:
    while data:
        data = data[os.write(out, data) :]


def _reap(out: int) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _write(out, b'{"exit": %d, "code": %d}\n' % (pid, os.waitstatus_to_exitcode(status)))


def _reader(inp: int, fds: "collections.deque[int]") -> "Callable[[], bytes]":
    """What reads the worker's requests: from a Unix socket, with the descriptors they carry (kept in
    `fds`, in order); from a pipe (a test's), without."""
    try:
        sock = socket.socket(fileno=inp)
    except OSError:  # not a socket
        return lambda: os.read(inp, 65536)
    if sock.family != socket.AF_UNIX:
        sock.detach()  # the descriptor stays ours, read as a stream
        return lambda: os.read(inp, 65536)

    def read() -> bytes:
        data, got, _, _ = socket.recv_fds(sock, 65536, 16)
        fds.extend(got)
        return data

    return read


def serve(inp: int, out: int) -> None:
    """Answer spawn requests until the worker closes our stdin. Single-threaded, no event loop:
    SIGCHLD wakes the poll through a self-pipe.

    Lean on purpose: each fork shares every page of the zygote with the new child again, so each page
    this loop writes before the next fork (an object's reference count, an allocation) is copied, a page
    fault of 2-4 µs here. The loop once touched ~190 pages a fork (selectors, json's Python layers, a
    BlockingIOError per wake-up, threading's lock); it touches ~120 now: a poll object, one C decoder,
    answers formatted as bytes, no exception on the way (docs/throughput.md, "The worker's own CPU per
    trivial run, zygote included")."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    poller = select.poll()
    poller.register(inp, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    fds: collections.deque[int] = collections.deque()
    read = _reader(inp, fds)
    _send(out, {"ready": os.getpid()})
    buf = b""
    while True:
        for fd, _ in poller.poll():
            if fd == wake_r:
                os.read(wake_r, 4096)  # what is left (more than 4096 signals) wakes the poll again
                _reap(out)
                continue
            data = read()
            if not data:
                return  # the worker is gone or closed us; running children live on (init adopts them)
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    _handle(msgspec.json.decode(line), out, fds)
        _reap(out)


def _handle(req: JsonObject, out: int, fds: "collections.deque[int]") -> None:
    # A descriptor comes with the first byte of its request, so it is here by the time its line is.
    relay = (fds.popleft() if fds else None) if req.get("relay") else None
    try:
        if relay is None and req.get("relay"):
            _send(out, {"id": req["id"], "error": "the relay's descriptor did not arrive"})
        elif _thread._count():  # never fork with a thread alive: its locks would be copied held
            _send(out, {"id": req["id"], "error": "the zygote has threads; refusing to fork"})
        else:
            _write(out, b'{"id": %d, "pid": %d}\n' % (req["id"], _fork(req, relay)))  # the worker's ids are ints
    except OSError as exc:
        _send(out, {"id": req["id"], "error": f"fork failed: {exc}", "errno": exc.errno})
    finally:
        if relay is not None:
            os.close(relay)  # the child has its own copy; the zygote holds no run's relay


def main() -> None:
    # A Ctrl-C or SIGTERM to the worker's process group is the worker's to handle: it closes our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inp, out = os.dup(0), os.dup(1)
    # Our own stdio no longer speaks the protocol: a stray print (in a preloaded module) cannot corrupt it.
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)
    # In the zygote's process only (other processes call preload too): None in sys.modules makes an import
    # of it raise ImportError.
    for name in NEVER_IN_A_RUN:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    preload()
    # Its children are the runs, with their secrets in memory: not dumpable from their first instruction,
    # which a fork inherits (each run marks itself again: lifecycle.start).
    close_to_inspection()
    # Everything imported so far lives as long as the zygote: out of the collector's reach, a child's
    # collections never walk (and so never copy, page by page) the objects it shares with the zygote.
    gc.collect()
    gc.freeze()
    collapse_heap()  # last: what the collection freed is not made huge
    serve(inp, out)


if __name__ == "__main__":
    main()

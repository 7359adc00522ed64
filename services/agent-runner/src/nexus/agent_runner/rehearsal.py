"""A rehearsal run: one trivial run (a scripted "done"), played once in a process that forks runners
(the worker's warm zygote) before it forks any, against a stand-in for NATS inside that process.

Why: a forked child shares the zygote's memory until it writes to it, and CPython writes to much
of what it merely *uses* the first time it uses it — it specialises ("quickens") a function's
bytecode in place after a few calls, fills the interpreter's type-attribute cache (one entry per
class and name looked up, each holding a reference), gives classes and dictionaries their version
tags, fills the `re` and other lazy caches. Done in every child, each of those costs the child a
copy-on-write page fault and the work itself. A run rehearsed once in the zygote leaves all of it
done in the memory every child inherits: the children only read it.

What the rehearsal does NOT leave behind (a child must not inherit any of it): no thread (asyncio
runs without its executor here: the stand-in listens on 127.0.0.1 by address, nothing is resolved),
no open socket or file (the listener, the connection and the temporary directory are gone when it
returns), no event loop, no signal handler (the process's own are put back), no log filter or line
(the log handlers' filters are put back; the lines go to /dev/null), no tracer provider (one is
lent for the rehearsal and taken back: a child installs its own), and no secret (the credential
is signed by a key made for the rehearsal and thrown away; there are no secrets)."""

import asyncio
import contextlib
import gc
import json
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec

from nexus.agent_runner.settings import RunnerSettings
from nexus.domain.agents import LLMSpec
from nexus.domain.settings import load_settings
from nexus.events.payloads import RunConfig

TRIVIAL = "steps:\n  - say: done\n"
rehearsed = 0  # rehearsals this process played through (a forked child sees its zygote's)
REHEARSAL_TIMEOUT_S = 20.0  # a rehearsal that hangs is given up (TimeoutError): the zygote serves unrehearsed
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGXCPU, signal.SIGCHLD, signal.SIGHUP)


def trivial_config(run_id: str, name: str) -> RunConfig:
    """The run config of a trivial run: a scripted agent that says "done", no repository."""
    return RunConfig(
        run_id=run_id,
        agent_id=f"agent_{name}",
        task_id=f"task_{name}",
        session_id=f"ses_{run_id[4:]}",
        system_prompt=name,
        llm=LLMSpec(provider="scripted", script=TRIVIAL),
    )


class _StandIn:
    """Enough of a NATS server for one runner: INFO, PONG for every PING, and for every publish
    with a reply subject a JetStream acknowledgement sent to the subscription that owns the reply."""

    def __init__(self) -> None:
        self.subs: dict[str, str] = {}  # sid → subject
        self.seq = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b'INFO {"server_id":"rehearsal","version":"2.10.0","proto":1,"headers":true,'
            b'"max_payload":1048576,"host":"127.0.0.1","port":0,"nonce":"rehearsal","auth_required":true}\r\n'
        )
        try:
            while line := await reader.readline():
                op, _, rest = line.rstrip(b"\r\n").partition(b" ")
                op = op.upper()
                if op == b"PING":
                    writer.write(b"PONG\r\n")
                elif op == b"SUB":
                    parts = rest.split()
                    self.subs[parts[-1].decode()] = parts[0].decode()
                elif op == b"UNSUB":
                    self.subs.pop(rest.split()[0].decode(), None)
                elif op in (b"PUB", b"HPUB"):
                    parts = rest.split()
                    await reader.readexactly(int(parts[-1]) + 2)  # the message and its CRLF
                    reply = parts[1].decode() if len(parts) > (3 if op == b"HPUB" else 2) else ""
                    if reply:
                        self._ack(writer, reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _ack(self, writer: asyncio.StreamWriter, reply: str) -> None:
        for sid, subject in self.subs.items():
            if subject == reply or (subject.endswith(".*") and reply.startswith(subject[:-1])):
                self.seq += 1
                body = json.dumps({"stream": "NEXUS_RUNS", "seq": self.seq}).encode()
                writer.write(f"MSG {reply} {sid} {len(body)}\r\n".encode() + body + b"\r\n")
                return


class _WorkerEnd(asyncio.Protocol):
    """Enough of the worker's end of a relay (nexus.events.relay): every publish acknowledged."""

    def __init__(self) -> None:
        from nexus.events import relay as frames

        self.frames = frames
        self.split = frames.Frames(1 << 21)
        self.seq = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a unix socket's transport

    def data_received(self, data: bytes) -> None:
        for body in self.split.feed(data):
            self.seq += 1
            ack = json.dumps({"stream": "NEXUS_RUNS", "seq": self.seq}).encode()
            if self.transport is not None:
                self.transport.write(self.frames.reply(self.frames.parse_request(body)[0], self.frames.ACK, ack))


async def _rehearse(root: Path) -> int:
    """A trivial run on a connection of its own (a cold runner's way, and a forked one's once its relay
    breaks), then one whose publishes ride a relay (a forked runner's way)."""
    import socket

    code = await _rehearse_one(root / "own", {})
    if code:
        return code
    mine, theirs = socket.socketpair()
    transport, _ = await asyncio.get_running_loop().create_unix_connection(_WorkerEnd, sock=mine)
    try:  # the run takes its end (NEXUS_RELAY_FD) and closes it as it ends
        return await _rehearse_one(root / "relayed", {"NEXUS_RELAY_FD": str(theirs.detach())})
    finally:
        transport.close()


async def _rehearse_one(root: Path, extra: dict[str, str]) -> int:
    from nexus.agent_runner.lifecycle import run

    root.mkdir()
    stand_in = _StandIn()
    server = await asyncio.start_server(stand_in.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = trivial_config("run_rehearsal000000", "rehearsal")
    (root / "run-config.json").write_bytes(msgspec.json.encode(cfg))
    environ = {
        **extra,
        "NEXUS_NATS_CREDS": _throwaway_credential(cfg),
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(root),
        "NEXUS_NATS_URL": f"nats://127.0.0.1:{port}",
        "NEXUS_RUN_CONFIG": str(root / "run-config.json"),
        "NEXUS_WORKSPACE": str(root / "workspace"),
        "NEXUS_STATE_DIR": str(root / "state"),
        "NEXUS_HEARTBEAT_S": "3600",
    }
    try:
        return await run(load_settings(RunnerSettings, environ), environ)
    finally:
        server.close()
        await server.wait_closed()


def _throwaway_credential(cfg: RunConfig) -> str:
    """A run credential as the worker mints one, signed by a key made here and thrown away: the
    rehearsal connects, signs the server's nonce and publishes exactly as a run does (the stand-in
    checks nothing; no real server would take it)."""
    import nkeys

    from nexus.events.credentials import RunSigner, new_seed, public_key
    from nexus.events.permissions import RunIdentity

    signer = RunSigner(public_key(new_seed(nkeys.PREFIX_BYTE_ACCOUNT)), new_seed(nkeys.PREFIX_BYTE_ACCOUNT))
    return signer.mint(RunIdentity(cfg.run_id, 1, cfg.session_id, None), 60)


@contextlib.contextmanager
def _lent_tracer_provider() -> Iterator[None]:
    """Spans made as a run makes them (the SDK's, exported nowhere) without installing a tracer
    provider in this process: OpenTelemetry takes the first one installed for good, and each child
    installs its own (with the run's exporter). The provider is lent to the API's global for the
    rehearsal and taken back, and every proxy tracer made before (the modules' own) forgets the
    tracer it resolved through it, so a child resolves them through its own provider."""
    import opentelemetry.trace as otel_trace
    from opentelemetry.sdk.trace import TracerProvider

    from nexus.observability import tracing

    if otel_trace._TRACER_PROVIDER is not None:  # installed already (not in the zygote): spans as they are
        yield
        return
    kept = dict(tracing._tracers)
    otel_trace._TRACER_PROVIDER = TracerProvider(
        resource=tracing.service_resource("agent-runner"), shutdown_on_exit=False
    )
    try:
        yield
    finally:
        otel_trace._TRACER_PROVIDER = None
        tracing._tracers.clear()
        tracing._tracers.update(kept)
        for obj in gc.get_objects():
            if isinstance(obj, otel_trace.ProxyTracer):
                obj._real_tracer = None


def rehearse() -> int:
    """Play one trivial run here and leave nothing of it but warm code and caches; its exit code
    (0 when the rehearsal ran through)."""
    handlers = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    filters = [(h, list(h.filters)) for h in logging.getLogger().handlers]
    root = Path(tempfile.mkdtemp(prefix="nexus-rehearsal-"))
    saved_err = os.dup(2)
    wakeup = signal.set_wakeup_fd(-1)
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)  # the rehearsal's log lines are nobody's
        os.close(null)
        with _lent_tracer_provider():
            code = asyncio.run(asyncio.wait_for(_rehearse(root), REHEARSAL_TIMEOUT_S))
        global rehearsed
        rehearsed += code == 0
        return code
    finally:
        os.dup2(saved_err, 2)
        os.close(saved_err)
        for log_handler, kept in filters:
            log_handler.filters[:] = kept
        for sig, disposition in handlers.items():
            if disposition is not None:
                with contextlib.suppress(ValueError, OSError):
                    signal.signal(sig, disposition)
        signal.set_wakeup_fd(wakeup)
        shutil.rmtree(root, ignore_errors=True)

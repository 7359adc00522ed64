"""The whole system on one machine: nats-server, FerretDB and the services as processes, their logs
multiplexed with a service prefix. `make run` uses it; so do the end-to-end tests."""

import argparse
import fcntl
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from nexus.dev.servers import (
    Managed,
    auth_for,
    free_port,
    monitor_for,
    nats_auth,
    start_ferretdb,
    start_nats,
    wait_port,
)
from nexus.dev.supervisor import CrashLoop, Supervisor

SERVICES = {
    "core-api": "nexus.core_api.main",
    "worker": "nexus.worker.main",
    "board-sync": "nexus.board_sync.main",
    "telegram-gateway": "nexus.telegram_gateway.main",
}
METRICS_PORTS = {"core-api": 9101, "worker": 9102, "board-sync": 9104, "telegram-gateway": 9105}
COLORS = {"core-api": 36, "worker": 33, "board-sync": 35, "telegram-gateway": 32, "nats": 34, "ferretdb": 31}


def wait_ready(url: str, timeout_s: float, proc: subprocess.Popen) -> None:
    """The port opens before the app's startup has run; /readyz answers 200 only after it."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"core-api exited with {proc.returncode} during startup")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout_s}s")


def _pump(name: str, stream: IO[bytes], sink: IO[str], color: bool) -> None:
    prefix = f"\x1b[{COLORS.get(name, 37)}m{name:>16}\x1b[0m | " if color else f"{name:>16} | "
    for raw in iter(stream.readline, b""):
        sink.write(prefix + raw.decode(errors="replace"))
        sink.flush()


@dataclass
class Stack:
    home: Path
    nats_url: str | None = None
    mongodb_url: str | None = None
    http_port: int = 8080
    metrics_ports: dict[str, int] = field(default_factory=lambda: dict(METRICS_PORTS))
    env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None  # None: multiplex to stdout
    servers: list[Managed] = field(default_factory=list)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def admin_key_file(self) -> Path:
        return self.home / "admin.key"

    nats_port: int | None = None
    mongodb_port: int | None = None
    # NATS authorization material (servers.nats_auth): generated under `home` when this stack starts its own
    # nats-server; given for a server started elsewhere with it; None for a server without authorization.
    auth_dir: Path | None = None
    # nats-server's monitoring endpoint, which core-api reads into nexus_nats_* (NEXUS_NATS_MONITOR_URL): found
    # for a server this process started; given (or empty: not read) for one started elsewhere.
    nats_monitor_url: str = ""
    nats_monitor_port: int | None = None

    def creds(self, user: str) -> str:
        return str(self.auth_dir / f"{user}.creds") if self.auth_dir else ""

    def start_infra(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        logs = self.log_dir or self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if self.nats_url and self.auth_dir is None:
            self.auth_dir = auth_for(self.nats_url)  # a server this process started with authorization
        if self.nats_url and not self.nats_monitor_url:
            self.nats_monitor_url = monitor_for(self.nats_url)
        if not self.nats_url:
            self.auth_dir = nats_auth(self.auth_dir or self.home / "nats-auth")
            s = start_nats(
                self.home / "nats",
                port=self.nats_port,
                log_path=logs / "nats.log",
                auth=self.auth_dir,
                monitor_port=self.nats_monitor_port,
            )
            self.servers.append(s)
            self.nats_url = s.url
            self.nats_monitor_url = s.monitor_url
        if not self.mongodb_url:
            s = start_ferretdb(self.home / "ferretdb", port=self.mongodb_port, log_path=logs / "ferretdb.log")
            self.servers.append(s)
            self.mongodb_url = s.url

    def service_env(self, name: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("NEXUS_") or k in ("NEXUS_TOOLS_DIR", "NEXUS_ADMIN_KEY", "NEXUS_OTLP_ENDPOINT")
        }
        env.update(
            NEXUS_NATS_URL=self.nats_url or "",
            NEXUS_NATS_CREDS=self.creds(name),
            NEXUS_NATS_RUN_SIGNER_FILE=str(self.auth_dir / "run-signer") if self.auth_dir and name == "worker" else "",
            NEXUS_MONGODB_URL=self.mongodb_url or "",
            NEXUS_METRICS_HOST="127.0.0.1",
            NEXUS_METRICS_PORT=str(self.metrics_ports[name]),
            NEXUS_HTTP_PORT=str(self.http_port),
            NEXUS_ADMIN_KEY_FILE=str(self.admin_key_file),
            NEXUS_WORKSPACES_DIR=str(self.home / "runs"),
            NEXUS_SECRETS_DIR=str(self.home / "secrets"),
            NEXUS_LOG_FORMAT=os.environ.get("NEXUS_LOG_FORMAT", "text"),
            PYTHONUNBUFFERED="1",
        )
        if name == "core-api":
            env["NEXUS_NATS_MONITOR_URL"] = self.nats_monitor_url
        env.update(self.env)
        return env

    def start_service(self, name: str) -> subprocess.Popen:
        if self.log_dir:
            out: IO | int = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 — closed once the service has it
        else:
            out = subprocess.PIPE
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", SERVICES[name]],
                env=self.service_env(name),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if not isinstance(out, int):  # the service writes to its own copy of the descriptor
                out.close()
        if out is subprocess.PIPE:
            threading.Thread(
                target=_pump, args=(name, proc.stdout, sys.stdout, sys.stdout.isatty()), daemon=True
            ).start()
        self.procs[name] = proc
        return proc

    def start(self, services: list[str] | None = None) -> None:
        self.start_infra()
        for name in services or list(SERVICES):
            self.start_service(name)
        if "core-api" in self.procs:
            wait_port("127.0.0.1", self.http_port, timeout_s=60, proc=self.procs["core-api"])
            wait_ready(f"{self.api_url}/readyz", timeout_s=60, proc=self.procs["core-api"])

    def restart_service(self, name: str) -> subprocess.Popen:
        """Start a service again after its process exited: what it had forked first goes (core-api's HTTP
        worker outlives a killed granian parent, still serving the port and its ops port)."""
        old = self.procs.get(name)
        if old is not None:
            _end_group(old.pid)
        return self.start_service(name)

    def restart_server(self, name: str) -> Managed:
        """Start nats-server or FerretDB again on the same port and data (after a crash or a kill)."""
        old = next(s for s in self.servers if s.name == name)
        old.stop(keep_data=True)  # a throw-away PostgreSQL cluster (under the temp dir) is FerretDB's data: keep it
        port = int(old.url.rsplit(":", 1)[1].strip("/"))
        log_path = (self.log_dir or self.home / "logs") / f"{name}.log"
        if name == "nats":  # with its authorization: without it no account of ours (nor its JetStream) exists
            monitor_port = int(old.monitor_url.rsplit(":", 1)[1]) if old.monitor_url else None
            new = start_nats(
                self.home / name, port=port, log_path=log_path, auth=self.auth_dir, monitor_port=monitor_port
            )
        else:
            new = start_ferretdb(self.home / name, port=port, log_path=log_path)
        self.servers[self.servers.index(old)] = new
        return new

    def supervise(self, supervisor: Supervisor) -> Supervisor:
        """Hand every process of the stack to `supervisor`, which restarts what crashes."""
        logs = self.log_dir or self.home / "logs"
        for name, proc in self.procs.items():
            hint = str(logs / f"{name}.log") if self.log_dir else f"the {name} lines above"
            supervisor.watch(name, proc, functools.partial(self.restart_service, name), hint)
        for server in self.servers:
            supervisor.watch(
                server.name,
                server.proc,
                functools.partial(lambda n: self.restart_server(n).proc, server.name),
                str(logs / f"{server.name}.log"),
            )
        return supervisor

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        _end_group(proc.pid)  # what it forked and left behind (it crashed, or exited before its children)
        return proc.returncode

    def stop(self) -> None:
        for name in list(self.procs):
            self.stop_service(name)
        self.stop_runners()
        for s in reversed(self.servers):
            s.stop()
        self.servers.clear()

    @property
    def run_files(self) -> Path:
        """The runs' control files (runner.json, runner.log…): the worker links `runs/.run-files` to where
        it keeps them, in memory when the machine has a tmpfs (the worker's `runtimes/run_files.py`)."""
        return self.home / "runs" / ".run-files"

    def stop_runners(self) -> None:
        """Runners live in process groups of their own (they outlive a worker restart by design); when
        the whole stack stops, so do they: each local run directory names its runner (`runner.json`: its pid
        and when it started; the worker's `runtimes/record.py`). Their control files go with them when they
        were in memory (nothing would ever free them there); the workspaces stay on disk."""
        for record in self.run_files.glob("*/runner.json"):
            try:
                runner = json.loads(record.read_bytes())
                pid, started = int(runner["pid"]), str(runner["started"])
                with open(f"/proc/{pid}/stat") as f:  # the same process, not one that got its pid later
                    if f.read().rsplit(")", 1)[1].split()[19] != started:
                        continue
                os.killpg(pid, signal.SIGKILL)
            except (ValueError, OSError, IndexError, KeyError, TypeError):
                pass  # already gone, or not ours to signal
        if self.run_files.is_symlink():
            shutil.rmtree(self.run_files.resolve(), ignore_errors=True)


def _end_group(leader_pid: int) -> None:
    """Kill what is left of the process group a service led (each starts its own session). Its pid is not
    given to another process while any member of its group lives, so this reaches only the service's own."""
    try:
        os.killpg(leader_pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left


def _port_or_free(preferred: int) -> int:
    """The well-known port when nothing listens there, otherwise any free one."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def _metrics_lines(stack: Stack) -> str:
    return "\n                 ".join(
        f"{name:<17} http://127.0.0.1:{port}/metrics" for name, port in stack.metrics_ports.items()
    )


def _traces_hint(stack: Stack) -> str:
    endpoint = stack.env.get("NEXUS_OTLP_ENDPOINT") or os.environ.get("NEXUS_OTLP_ENDPOINT")
    return (
        f"OTLP/HTTP to {endpoint}"
        if endpoint
        else "none: start with NEXUS_OTLP_ENDPOINT=http://<collector>:4318 to export spans"
    )


def _banner(stack: Stack) -> str:
    key_hint = "$NEXUS_ADMIN_KEY" if os.environ.get("NEXUS_ADMIN_KEY") else f"$(cat {stack.admin_key_file})"
    return f"""
  Nexus is up.
    web UI       {stack.api_url}/ui   (sign in with the admin key)
    API          {stack.api_url}   (OpenAPI: {stack.api_url}/schema/openapi.json, docs: {stack.api_url}/schema)
    admin key    {"from NEXUS_ADMIN_KEY" if os.environ.get("NEXUS_ADMIN_KEY") else stack.admin_key_file}
    NATS         {stack.nats_url}   (monitoring: {stack.nats_monitor_url or "not read: set NEXUS_NATS_MONITOR_URL"})
    MongoDB      {stack.mongodb_url}
    agent-runner one process per run, launched by the worker (workspaces in {stack.home / "runs"})

  Observability (docs/observability.md):
    metrics      {_metrics_lines(stack)}
                 (NATS's connections and streams are core-api's nexus_nats_*, read from NATS's monitoring)
    Prometheus   prometheus --config.file=deploy/prometheus/prometheus.yml   (scrapes the above; alert rules included)
    Grafana      provisioning in deploy/grafana/provisioning, dashboards in deploy/grafana/dashboards
    traces       {_traces_hint(stack)}

  Try:
    curl -H "Authorization: Bearer {key_hint}" {stack.api_url}/v1/agents

  Ctrl-C stops everything. A process that crashes is restarted with backoff; a crash loop stops it all.
"""


def hold_home(home: Path) -> IO[str]:
    """Take `home` for this process alone, for as long as it lives (the lock goes with the process, so none is
    ever left stale). A second `make run` on the same data used to start a second nats-server on the first
    one's JetStream store ("stream state outdated, will rebuild") and end in a traceback."""
    home.mkdir(parents=True, exist_ok=True)
    lock = open(home / "run.lock", "a+")  # noqa: SIM115 — held open until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise SystemExit(
            f"  Nexus is already running on {home} ({holder}).\n"
            "  Stop it first (Ctrl-C where it runs), or start another on data of its own:\n"
            "  uv run nexus-dev run --home <dir> --port <port>"
        ) from None
    lock.truncate(0)
    lock.write(f"pid {os.getpid()}")
    lock.flush()
    return lock


def main() -> None:
    parser = argparse.ArgumentParser(prog="nexus-dev", description="Run Nexus on this machine.")
    parser.add_argument("command", choices=["run"], help="run: start everything and follow the logs")
    parser.add_argument("--home", default=".nexus", help="data directory (git-ignored)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("NEXUS_HTTP_PORT", "8080")))
    args = parser.parse_args()
    stack = Stack(
        home=Path(args.home).resolve(),
        nats_url=os.environ.get("NEXUS_NATS_URL"),
        mongodb_url=os.environ.get("NEXUS_MONGODB_URL"),
        http_port=args.port,
        nats_port=_port_or_free(4222),
        nats_monitor_port=_port_or_free(8222),
        nats_monitor_url=os.environ.get("NEXUS_NATS_MONITOR_URL", ""),
        mongodb_port=_port_or_free(27017),
    )
    home_lock = hold_home(stack.home)
    stopping = threading.Event()
    # A closed terminal or a dropped ssh session is SIGHUP: without a handler this process died at once and
    # left every service, nats-server and FerretDB running (they lead sessions of their own) on its ports.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stopping.set())
    code = 0
    try:
        stack.start()
        print(_banner(stack), flush=True)
        supervisor = stack.supervise(Supervisor())
        while not stopping.is_set():
            supervisor.check()
            stopping.wait(0.5)
    except CrashLoop as exc:
        print(f"\n  {exc}\n  stopping everything.", file=sys.stderr, flush=True)
        code = 1
    except (RuntimeError, TimeoutError, OSError) as exc:  # a process that did not come up: one line, not a traceback
        print(f"\n  {exc}\n  stopping everything; the logs are in {stack.home / 'logs'}", file=sys.stderr, flush=True)
        code = 1
    finally:
        print("\n  stopping Nexus…", flush=True)
        stack.stop()
        home_lock.close()
    sys.exit(code)

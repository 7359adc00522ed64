"""Start and stop nats-server (JetStream) and FerretDB as child processes.

FerretDB runs on its PostgreSQL handler over a private PostgreSQL cluster when PostgreSQL is
installed (the default: keyed reads and equality filters use indexes, see nexus.dev.postgres),
otherwise on its SQLite handler (every read scans the collection). NEXUS_FERRETDB_HANDLER=sqlite
or =postgresql chooses explicitly."""

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def tools_dir() -> Path:
    return Path(os.environ.get("NEXUS_TOOLS_DIR", Path.home() / ".cache/nexus/bin"))


def find_tool(name: str) -> str:
    candidate = tools_dir() / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not found in {tools_dir()} or PATH; run scripts/install-tools.sh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct free ports: all sockets are held open together, so no two calls collide."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_port(host: str, port: int, timeout_s: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s")


@dataclass
class Managed:
    name: str
    proc: subprocess.Popen
    url: str
    log: IO | None = field(default=None, repr=False)
    stop_signal: int = signal.SIGTERM
    # servers this one needs, stopped after it (FerretDB's PostgreSQL)
    backing: list["Managed"] = field(default_factory=list)
    on_stopped: list = field(default_factory=list, repr=False)
    monitor_url: str = ""  # nats-server's monitoring endpoint (/varz, /jsz), when it has one

    def stop(self, timeout_s: float = 10.0, *, keep_data: bool = False) -> None:
        """Stop it and what backs it; a throw-away server's data goes with it unless `keep_data`
        (a restart: the next server on the same data directory carries on with it)."""
        self._stop(timeout_s)
        for b in self.backing:
            b.stop(timeout_s, keep_data=keep_data)
        if not keep_data:
            for fn in self.on_stopped:
                fn()

    def _stop(self, timeout_s: float) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.log:
            self.log.close()


def _spawn(
    args: list[str], log_path: Path | None, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, IO | None]:
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115 — closed by Managed.stop
    out = log if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
    )
    return proc, log


def nats_auth(directory: Path) -> Path:
    """NATS authorization material in `directory` (nexus.events.credentials), generated when missing:
    `nats.conf` for the server, `<service>.creds` per service (and `tools.creds` for tests and
    developers), `run-signer` for the worker."""
    from nexus.events.credentials import BusAuth

    BusAuth.load_or_generate(directory)
    return directory


# The authorization of each nats-server this process started, by URL: a Stack pointed at one of them
# hands its services their credentials without being told (the tests' session server, a cluster).
_AUTH_BY_URL: dict[str, Path] = {}


def auth_for(url: str) -> Path | None:
    return _AUTH_BY_URL.get(url.split(",")[0].strip())


def remember_auth(url: str, auth: Path | None) -> None:
    if auth is not None:
        _AUTH_BY_URL[url] = auth


# The monitoring endpoint of each nats-server this process started, by URL (as _AUTH_BY_URL).
_MONITOR_BY_URL: dict[str, str] = {}


def monitor_for(url: str) -> str:
    """The monitoring endpoint of a nats-server this process started ("" for one started elsewhere)."""
    return _MONITOR_BY_URL.get(url.split(",")[0].strip(), "")


def start_nats(
    data_dir: Path,
    port: int | None = None,
    log_path: Path | None = None,
    auth: Path | None = None,
    monitor_port: int | None = None,
) -> Managed:
    """nats-server with JetStream and its monitoring endpoint on `monitor_port` (a free one when None); with
    `auth` (a nats_auth() directory) every client must be one of its users."""
    port = port or free_port()
    monitor_port = monitor_port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        find_tool("nats-server"),
        "-js",
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        str(monitor_port),
        "-sd",
        str(data_dir),
    ]
    if auth is not None:
        args += ["-c", str(auth / "nats.conf")]
    proc, log = _spawn(args, log_path)
    wait_port("127.0.0.1", port, proc=proc)
    remember_auth(f"nats://127.0.0.1:{port}", auth)
    monitor = f"http://127.0.0.1:{monitor_port}"
    _MONITOR_BY_URL[f"nats://127.0.0.1:{port}"] = monitor
    return Managed("nats", proc, f"nats://127.0.0.1:{port}", log, monitor_url=monitor)


# FerretDB's Go garbage collector runs once its heap has grown by 10x, not 1x (Go's default): every
# command converts whole documents, and at the default a tenth of its CPU went to collecting them
# (measured: 1.07 -> 0.71 CPU-ms per update by id, 0.56 -> 0.43 per insert of four; its resident
# memory 36 -> 73 MB). The soft limit keeps a burst of large reads from growing it past 512 MiB. Set
# either in the environment to override.
FERRETDB_GC = {"GOGC": "1000", "GOMEMLIMIT": "512MiB"}


def ferretdb_handler(data_dir: Path | None = None) -> str:
    from nexus.dev import postgres

    wanted = os.environ.get("NEXUS_FERRETDB_HANDLER", "")
    if wanted in ("sqlite", "postgresql"):
        return wanted
    if data_dir is not None and not (data_dir / "pg").exists() and any(data_dir.glob("*.sqlite")):
        return "sqlite"  # a data directory from before: keep its data where it is
    return "postgresql" if postgres.available() else "sqlite"


def start_ferretdb(
    data_dir: Path, port: int | None = None, log_path: Path | None = None, *, handler: str | None = None
) -> Managed:
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    handler = handler or ferretdb_handler(data_dir)
    backing: list[Managed] = []
    if handler == "postgresql":
        from nexus.dev import postgres

        pg_log = log_path.with_name(log_path.stem + "-postgres" + log_path.suffix) if log_path else None
        pg = postgres.start_postgres(data_dir / "pg", log_path=pg_log)
        backing.append(pg)
        backend = [f"--postgresql-url={pg.url}"]
    else:
        backend = [f"--sqlite-url=file:{data_dir}/"]
    args = [
        find_tool("ferretdb"),
        f"--handler={handler}",
        *backend,
        f"--listen-addr=127.0.0.1:{port}",
        "--telemetry=disable",
        "--log-level=warn",
        "--debug-addr=-",
        "--state-dir=" + str(data_dir),
    ]
    try:
        proc, log = _spawn(args, log_path, env={**FERRETDB_GC, **os.environ})
        wait_port("127.0.0.1", port, proc=proc)
    except BaseException:
        for b in backing:
            b.stop()
        raise
    return Managed("ferretdb", proc, f"mongodb://127.0.0.1:{port}/", log, backing=backing)

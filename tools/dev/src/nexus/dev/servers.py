"""Start and stop nats-server (JetStream) and FerretDB (SQLite handler) as child processes."""

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

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.log:
            self.log.close()


def _spawn(args: list[str], log_path: Path | None) -> tuple[subprocess.Popen, IO | None]:
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115 — closed by Managed.stop
    out = log if log else subprocess.DEVNULL
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
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


def start_nats(data_dir: Path, port: int | None = None, log_path: Path | None = None, auth: Path | None = None) -> Managed:
    """nats-server with JetStream; with `auth` (a nats_auth() directory) every client must be one of its users."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [find_tool("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(data_dir)]
    if auth is not None:
        args += ["-c", str(auth / "nats.conf")]
    proc, log = _spawn(args, log_path)
    wait_port("127.0.0.1", port, proc=proc)
    remember_auth(f"nats://127.0.0.1:{port}", auth)
    return Managed("nats", proc, f"nats://127.0.0.1:{port}", log)


def start_ferretdb(data_dir: Path, port: int | None = None, log_path: Path | None = None) -> Managed:
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        find_tool("ferretdb"),
        "--handler=sqlite",
        f"--sqlite-url=file:{data_dir}/",
        f"--listen-addr=127.0.0.1:{port}",
        "--telemetry=disable",
        "--log-level=warn",
        "--debug-addr=-",
        "--state-dir=" + str(data_dir),
    ]
    proc, log = _spawn(args, log_path)
    wait_port("127.0.0.1", port, proc=proc)
    return Managed("ferretdb", proc, f"mongodb://127.0.0.1:{port}/", log)

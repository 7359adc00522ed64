"""core-api served by granian on loopback, for what the in-process test client cannot do: stream
(SSE responses never end, and the test client buffers whole bodies)."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgspec
from litestar import Litestar

from nexus.core_api.app import create_app
from nexus.core_api.settings import CoreSettings
from nexus.dev.servers import Managed, free_port
from nexus.domain.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def create() -> Litestar:
    """Granian's factory: the app without background consumers (their durable names are shared)."""
    return create_app(load_settings(CoreSettings, os.environ), background=False)


@contextmanager
def served(settings: CoreSettings, log_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        **{f"NEXUS_{k.upper()}": str(v) for k, v in msgspec.structs.asdict(settings).items() if v is not None},
    }
    log = open(log_path, "ab")  # noqa: SIM115 — closed by Managed.stop
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
            "tests.core_api.served:create",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    server = Managed("core-api", proc, f"http://127.0.0.1:{port}", log)
    try:
        try:
            wait_ready(server.url, proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; its log:\n{log_path.read_text(errors='replace')[-3000:]}") from None
        yield server.url
    finally:
        server.stop()


def wait_ready(url: str, proc: subprocess.Popen, tries: int = 600) -> None:
    for _ in range(tries):
        if proc.poll() is not None:
            raise RuntimeError(f"core-api exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("core-api never became ready")

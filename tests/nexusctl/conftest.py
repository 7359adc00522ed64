"""nexusctl against the real API: core-api and the worker as processes (the worker launches
agent-runner per run) on the real NATS and FerretDB, one database for this folder's tests."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nexus.dev.servers import free_ports
from nexus.dev.stack import SERVICES, Stack
from nexus.nexusctl.main import app


@dataclass
class Nexus:
    url: str
    admin_key: str
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        # NEXUSCTL_CONFIG points nowhere so a developer's own contexts never leak into the tests.
        return {
            "NEXUS_URL": self.url,
            "NEXUS_API_KEY": self.admin_key,
            "NEXUSCTL_CONFIG": str(self.home / "none.yaml"),
            **extra,
        }


@pytest.fixture(scope="package")
def nexus(nats_url: str, mongo_url: str, nats_auth, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nexus]:
    tmp = tmp_path_factory.mktemp("nexusctl")
    admin_key = "nxk_ctl_admin_" + uuid.uuid4().hex
    ports = free_ports(1 + len(SERVICES))
    stack = Stack(
        home=tmp / "nexus",
        nats_url=nats_url,
        mongodb_url=mongo_url,
        http_port=ports[0],
        auth_dir=nats_auth,
        metrics_ports=dict(zip(SERVICES, ports[1:], strict=True)),
        log_dir=tmp,
        env={
            "NEXUS_MONGODB_DB": f"ctl_{uuid.uuid4().hex[:10]}",
            "NEXUS_ADMIN_KEY": admin_key,
            "NEXUS_SWEEP_INTERVAL_S": "1",
        },
    )
    try:
        stack.start(["core-api", "worker"])
        yield Nexus(stack.api_url, admin_key, tmp)
    finally:
        stack.stop()
        for log in sorted(tmp.glob("*.log")):  # shown by pytest when a test fails
            print(f"----- {log.name} -----\n{log.read_text(errors='replace')[-4000:]}")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def ctl(nexus: Nexus):
    """Run nexusctl in-process (typer's CliRunner) against the stack, as the admin by default."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None, **env: str) -> Result:
        r = runner.invoke(app, list(args), input=input, env=nexus.env(**env), catch_exceptions=False)
        return Result(r.exit_code, r.stdout, r.stderr)

    return run

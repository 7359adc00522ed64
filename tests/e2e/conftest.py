"""End-to-end fixtures: every service as a real process against the real NATS and FerretDB."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from nexus.dev.servers import free_ports
from nexus.dev.stack import SERVICES, Stack
from tests.gitrepo import git, make_bare_repo  # noqa: F401 — `git` is used by the e2e tests
from tests.telegram_gateway.fake_bot_api import FakeBotApi


@contextlib.contextmanager
def running_stack(
    tmp_path: Path,
    nats_url: str,
    mongo_url: str,
    *,
    env: dict[str, str] | None = None,
    services: list[str] | None = None,
    nats_auth: Path | None = None,
) -> Iterator[Stack]:
    """The services as real processes on free ports, with their own database; logs are printed at
    the end (pytest shows them when the test fails)."""
    http_port, *ops_ports = free_ports(1 + len(SERVICES))
    s = Stack(
        home=tmp_path / "nexus",
        nats_url=nats_url,
        mongodb_url=mongo_url,
        http_port=http_port,
        auth_dir=nats_auth,
        metrics_ports=dict(zip(SERVICES, ops_ports, strict=True)),
        log_dir=tmp_path,
        env={
            "NEXUS_MONGODB_DB": f"e2e_{uuid.uuid4().hex[:10]}",
            "NEXUS_ADMIN_KEY": "nxk_e2e_admin_" + uuid.uuid4().hex,
            "NEXUS_HEARTBEAT_TIMEOUT_S": "20",
            "NEXUS_SWEEP_INTERVAL_S": "1",
            **(env or {}),
        },
    )
    crashed: dict[str, int | None] = {}
    try:
        s.start(services)
        yield s
        # A service the test did not stop itself must still be running: a crash fails the test.
        crashed = {name: proc.returncode for name, proc in s.procs.items() if proc.poll() is not None}
    finally:
        s.stop()
        for log in sorted(tmp_path.glob("*.log")):
            print(f"----- {log.name} -----\n{log.read_text(errors='replace')[-6000:]}")
    assert not crashed, f"services exited during the test (name: exit code): {crashed}"


@pytest.fixture
def stack(tmp_path: Path, nats_url: str, mongo_url: str, nats_auth: Path | None) -> Iterator[Stack]:
    with running_stack(tmp_path, nats_url, mongo_url, nats_auth=nats_auth) as s:
        yield s


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    """A local fake of Telegram's Bot API (the gateway takes `fake.token` and `fake.base_url`)."""
    f = FakeBotApi()
    await f.start()
    yield f
    await f.stop()


@pytest.fixture
def bare_repo(tmp_path: Path) -> Path:
    """A bare repository with one commit on main, standing in for the team's remote."""
    return make_bare_repo(tmp_path)


async def wait_for(api: httpx.AsyncClient, path: str, predicate, *, attempts: int = 600, every_s: float = 0.1) -> dict:
    """Poll until predicate(body) holds; the bound is a count of polls, not an assertion on time."""
    body: dict = {}
    for _ in range(attempts):
        r = await api.get(path)
        r.raise_for_status()
        body = r.json()
        if predicate(body):
            return body
        await asyncio.sleep(every_s)
    raise AssertionError(f"{path} never reached the expected state; last: {body}")

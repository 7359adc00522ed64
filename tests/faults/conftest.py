"""The fault matrix runs on a stack that owns its nats-server, FerretDB and PostgreSQL, so they can be
killed too; board-sync projects to a Plane double and telegram-gateway alerts through a Telegram fake."""

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from nexus.dev.doubles.plane import PlaneDouble
from nexus.dev.stack import Stack
from tests.e2e.conftest import running_stack
from tests.faults.harness import FAULT_ENV, FaultStack
from tests.faults.records import Outcome, save, table
from tests.gitrepo import make_bare_repo
from tests.telegram_gateway.fake_bot_api import FakeBotApi

SERVICES = ["core-api", "worker", "board-sync", "telegram-gateway"]


@pytest.fixture(scope="module")
def fault_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def plane() -> Iterator[tuple[PlaneDouble, str]]:
    double = PlaneDouble(rate_limit=100_000)  # the matrix is not about Plane's rate limit
    url = double.start()
    yield double, url
    double.stop()


@pytest.fixture(scope="module")
async def bot() -> AsyncIterator[FakeBotApi]:
    fake = FakeBotApi()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture(scope="module")
def own_stack(fault_dir: Path, bot: FakeBotApi) -> Iterator[Stack]:
    env = {**FAULT_ENV, "NEXUS_TELEGRAM_TOKEN": bot.token, "NEXUS_TELEGRAM_API_URL": bot.base_url}
    with running_stack(fault_dir, None, None, services=SERVICES, env=env) as s:  # type: ignore[arg-type]  # None: the stack starts its own servers
        yield s


@pytest.fixture(scope="module")
async def faults(
    own_stack: Stack, fault_dir: Path, plane: tuple[PlaneDouble, str], bot: FakeBotApi
) -> AsyncIterator[FaultStack]:
    async with httpx.AsyncClient(
        base_url=own_stack.api_url, timeout=30, headers={"Authorization": f"Bearer {own_stack.env['NEXUS_ADMIN_KEY']}"}
    ) as api:
        f = FaultStack(own_stack, api, make_bare_repo(fault_dir), plane[0], bot)
        await f.setup(plane[1])
        try:
            yield f
        finally:
            f.peer.stop()


@pytest.fixture(scope="module")
def outcomes() -> Iterator[list[Outcome]]:
    results: list[Outcome] = []
    yield results
    if results:
        print("\n" + table(results))
        if path := os.environ.get("NEXUS_FAULTS_REPORT"):
            save(results, Path(path))

"""The fault matrix runs on a stack that owns its nats-server and FerretDB, so they can be killed too."""

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from nexus.dev.stack import Stack
from tests.e2e.conftest import running_stack
from tests.faults.harness import FAULT_ENV, FaultStack, Outcome, save, table
from tests.gitrepo import make_bare_repo


@pytest.fixture(scope="module")
def fault_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def own_stack(fault_dir: Path) -> Iterator[Stack]:
    with running_stack(fault_dir, None, None, services=["core-api", "worker"], env=FAULT_ENV) as s:  # type: ignore[arg-type]  # None: the stack starts its own servers
        yield s


@pytest.fixture(scope="module")
async def faults(own_stack: Stack, fault_dir: Path) -> AsyncIterator[FaultStack]:
    async with httpx.AsyncClient(
        base_url=own_stack.api_url, timeout=30, headers={"Authorization": f"Bearer {own_stack.env['NEXUS_ADMIN_KEY']}"}
    ) as api:
        f = FaultStack(own_stack, api, make_bare_repo(fault_dir))
        await f.setup()
        yield f


@pytest.fixture(scope="module")
def outcomes() -> Iterator[list[Outcome]]:
    results: list[Outcome] = []
    yield results
    if results:
        print("\n" + table(results))
        if path := os.environ.get("NEXUS_FAULTS_REPORT"):
            save(results, Path(path))

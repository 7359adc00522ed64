"""Shared fixtures. Servers are real: nats-server -js and FerretDB, started once per test session
on free ports with throw-away data dirs (or taken from NEXUS_TEST_NATS_URL / NEXUS_TEST_MONGODB_URL).
NATS runs with authorization on: every service, run and test connects as a user of `nats_auth`
(tests themselves as `tools`, through `nats_creds`)."""

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nexus.db.connection import connect_db
from nexus.dev.servers import nats_auth as make_nats_auth
from nexus.dev.servers import start_ferretdb, start_nats


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="nexus-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_auth(servers_dir: Path) -> Path | None:
    """The authorization material of the test NATS server (None: an outside server without it)."""
    if os.environ.get("NEXUS_TEST_NATS_URL"):
        given = os.environ.get("NEXUS_TEST_NATS_AUTH")
        return Path(given) if given else None
    return make_nats_auth(servers_dir / "nats-auth")


@pytest.fixture(scope="session")
def nats_creds(nats_auth: Path | None) -> str:
    """The tests' own NATS user (`tools`): pass as `creds=` to nexus.events.bus.connect."""
    return str(nats_auth / "tools.creds") if nats_auth else ""


def creds_of(nats_auth: Path | None, user: str) -> str:
    return str(nats_auth / f"{user}.creds") if nats_auth else ""


@pytest.fixture(scope="session")
def nats_url(servers_dir: Path, nats_auth: Path | None) -> Iterator[str]:
    if url := os.environ.get("NEXUS_TEST_NATS_URL"):
        yield url
        return
    server = start_nats(servers_dir / "nats", log_path=servers_dir / "nats.log", auth=nats_auth)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def mongo_url(servers_dir: Path) -> Iterator[str]:
    if url := os.environ.get("NEXUS_TEST_MONGODB_URL"):
        yield url
        return
    server = start_ferretdb(servers_dir / "ferretdb", log_path=servers_dir / "ferretdb.log")
    yield server.url
    server.stop()


@pytest.fixture
async def fresh_db(mongo_url: str):
    """The documents bound (beanie) to a throw-away database on the test server."""
    client = await connect_db(mongo_url, f"t_{uuid.uuid4().hex[:10]}", create_indexes=False)
    yield client
    await client.close()


def need_tool(name: str) -> str:
    """The path of a tool the project's setup installs (scripts/install-test-tools.sh). Missing on a
    developer's machine it skips the test; in CI (CI set) a missing tool fails it, so a check can
    never silently stop running."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/install-test-tools.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


SERVER_FIXTURES = frozenset({"nats_url", "mongo_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that reaches a server (through any fixture built on one) is `infra`, marked or not:
    `make test-fast` (`-m "not infra and not e2e"`) then really starts no server."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.infra)

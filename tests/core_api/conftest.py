"""In-process core-api against the real NATS and FerretDB: one database per test module, keys per role."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from litestar import Litestar
from litestar.testing import AsyncTestClient

from nexus.core_api.app import create_app
from nexus.core_api.settings import CoreSettings
from nexus.events.bus import connect
from nexus.events.consumer import consume_once
from tests.conftest import creds_of


def make_settings(nats_url: str, mongo_url: str, tmp: Path, tag: str, nats_creds: str = "") -> CoreSettings:
    return CoreSettings(
        nats_url=nats_url,
        nats_creds=nats_creds,
        mongodb_url=mongo_url,
        mongodb_db=f"capi_{tag}_{uuid.uuid4().hex[:8]}",
        admin_key="nxk_test_admin_" + uuid.uuid4().hex,
        admin_key_file=str(tmp / "admin.key"),
        sse_keepalive_s=0.5,
        max_body_bytes=64 * 1024,
    )


@pytest.fixture(scope="module")
def settings(
    nats_url: str, mongo_url: str, nats_auth, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> CoreSettings:
    tag = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")[:12]
    return make_settings(nats_url, mongo_url, tmp_path_factory.mktemp("core_api"), tag, creds_of(nats_auth, "core-api"))


@pytest.fixture(scope="module")
def app(settings: CoreSettings) -> Litestar:
    # No background consumers: durable consumer names are shared on the test NATS server.
    return create_app(settings, background=False)


@pytest.fixture(scope="module")
async def client(app: Litestar, settings: CoreSettings) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(app, timeout=30) as c:
        c.headers.update(bearer(settings.admin_key))
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def new_key(client: AsyncTestClient, role: str, name: str | None = None) -> str:
    r = await client.post("/v1/api-keys", json={"name": name or f"{role}-{uuid.uuid4().hex[:6]}", "role": role})
    assert r.status_code == 201, r.text
    return r.json()["key"]


async def new_agent(client: AsyncTestClient, name: str | None = None, **spec) -> dict:
    body = {"name": name or f"agent-{uuid.uuid4().hex[:8]}", "system_prompt": "You help.", **spec}
    r = await client.post("/v1/agents", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def new_run(client: AsyncTestClient, agent: dict | None = None, **task) -> dict:
    """A task assigned to an agent without a repository is dispatched at once: a real run, no worker needed."""
    agent = agent or await new_agent(client)
    r = await client.post("/v1/tasks", json={"title": "do a thing", "assignee": agent["id"], **task})
    assert r.status_code == 201, r.text
    run_id = r.json()["current_run_id"]
    assert run_id, r.json()
    r = await client.get(f"/v1/runs/{run_id}")
    assert r.status_code == 200, r.text
    return r.json()


async def store_status(settings, run_id: str, status: str) -> None:
    """What core-api's ingestion does with a runner's final status (the test app runs no consumer)."""
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url)
    try:
        await client[settings.mongodb_db]["runs"].update_one({"_id": run_id}, {"$set": {"status": status}})
    finally:
        await client.close()


def assert_problem(r, status: int, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if field is not None:
        fields = [e.get("field") for e in body.get("errors", [])]
        assert field in fields, body
    return body


async def in_app(client: AsyncTestClient, fn, *args):
    """Run a service coroutine on the app's own event loop (the test client serves it from a portal
    thread, and the database client is bound to that loop)."""
    return await asyncio.to_thread(client.blocking_portal.call, fn, *args)


async def consume_until(nats: tuple[str, str], name: str, done: Callable[[], Awaitable[bool]], **options: Any) -> None:
    """A consumer loop (`consume_once` with `options`, on its own connection as the tests' NATS user) run
    on the app's loop until `done()` holds, the loop ends, or a bounded number of polls has passed."""
    nc = await connect(nats[0], name, creds=nats[1])
    stop = asyncio.Event()
    task = asyncio.create_task(consume_once(nc.jetstream(), stop=stop, **options))
    try:
        for _ in range(600):
            if await done() or task.done():
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await nc.close()


@pytest.fixture(scope="module")
def server_url(settings: CoreSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same app behind granian on loopback, sharing the module's database."""
    from tests.core_api.served import served

    log = tmp_path_factory.mktemp("granian") / "core-api.log"
    with served(settings, log) as url:
        yield url
    print(log.read_text(errors="replace")[-4000:])


@pytest.fixture(scope="module")
async def http(server_url: str, settings: CoreSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server_url, headers=bearer(settings.admin_key), timeout=30) as c:
        yield c

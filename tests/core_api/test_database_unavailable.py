"""While the database is out of reach (FerretDB restarting under `make run`, a lost connection), a request
is a 503 with Retry-After, as for the bus — it was a 500 "Internal error" after the 10 s server selection."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from nexus.core_api.app import create_app
from nexus.dev.servers import start_ferretdb
from tests.conftest import creds_of
from tests.core_api.conftest import bearer, make_settings


@pytest.fixture
async def client_of_a_dead_database(nats_url: str, nats_auth, tmp_path: Path) -> AsyncIterator[AsyncTestClient]:
    """core-api started on a database of its own, which is then stopped."""
    ferretdb = start_ferretdb(tmp_path / "ferretdb", handler="sqlite")
    try:
        settings = make_settings(nats_url, ferretdb.url, tmp_path, "dbout", creds_of(nats_auth, "core-api"))
        async with AsyncTestClient(create_app(settings, background=False), timeout=60) as client:
            client.headers.update(bearer(settings.admin_key))
            assert (await client.get("/v1/agents")).status_code == 200
            ferretdb.stop(keep_data=True)
            yield client
    finally:
        ferretdb.stop()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/agents", None),
        ("POST", "/v1/skills", {"name": "style", "content": "# style"}),
    ],
)
async def test_a_request_the_database_cannot_answer_is_a_503(
    client_of_a_dead_database: AsyncTestClient, method: str, path: str, body: dict | None
) -> None:
    r = await client_of_a_dead_database.request(method, path, json=body)
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "2"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"] == "the database did not answer; try again shortly"


def test_every_operation_documents_the_503_and_its_shape(tmp_path: Path) -> None:
    """A client reading /schema learns of the outage answer (problem+json, Retry-After) on every route."""
    settings = make_settings("nats://unused:4222", "mongodb://unused:27017/", tmp_path, "schema")
    schema = create_app(settings, background=False).openapi_schema.to_schema()
    undocumented = [
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "application/problem+json" not in operation.get("responses", {}).get("503", {}).get("content", {})
    ]
    assert not undocumented, undocumented

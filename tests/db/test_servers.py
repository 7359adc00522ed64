"""The embedded database as tools/dev starts it: FerretDB on a private PostgreSQL cluster."""

import os

import pytest
from pymongo import MongoClient

from nexus.dev import postgres
from nexus.dev.servers import ferretdb_handler, start_ferretdb


def test_ferretdb_on_postgresql_serves_and_leaves_nothing_behind(tmp_path) -> None:
    if not postgres.available():
        pytest.skip("PostgreSQL or FerretDB's PostgreSQL handler is not installed")
    server = start_ferretdb(tmp_path / "ferretdb", handler="postgresql")
    link = tmp_path / "ferretdb" / "pg"
    cluster = link.resolve()
    try:
        assert [b.name for b in server.backing] == ["postgres"]
        with MongoClient(server.url, serverSelectionTimeoutMS=10_000) as client:
            client.t.c.insert_one({"_id": "a", "n": 1})
            assert client.t.c.find_one({"_id": "a"})["n"] == 1
    finally:
        server.stop()
    assert server.backing[0].proc.poll() is not None
    if os.geteuid() == 0:  # a throw-away cluster outside the root-only temp dir: removed with its server
        assert not cluster.exists() and not link.exists()


def test_a_data_directory_from_before_stays_on_sqlite(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NEXUS_FERRETDB_HANDLER", raising=False)
    (tmp_path / "nexus.sqlite").touch()
    assert ferretdb_handler(tmp_path) == "sqlite"
    monkeypatch.setenv("NEXUS_FERRETDB_HANDLER", "postgresql")
    assert ferretdb_handler(tmp_path) == "postgresql"

"""A document too large to be stored as it is (a chunk of a run's events) is compressed with lz4, not
pglz: the same size within a few percent, several times less CPU to store (docs/throughput.md)."""

import shutil

import pytest
from pymongo import MongoClient

from nexus.dev import postgres
from nexus.dev.servers import start_ferretdb

pytestmark = pytest.mark.infra


def test_a_large_document_is_stored_lz4_compressed(tmp_path) -> None:
    if not postgres.available():
        pytest.skip("PostgreSQL is not installed")
    server = start_ferretdb(tmp_path / "f", log_path=tmp_path / "f.log", handler="postgresql")
    try:
        client: MongoClient = MongoClient(server.url)
        try:
            events = b"[" + b",".join(b'{"type":"run.log","data":{"message":"step %d"}}' % i for i in range(200)) + b"]"
            client["m"]["chunks"].insert_one({"_id": "run_1:1", "events": events})
        finally:
            client.close()
        pg = server.backing[0]
        (table,) = postgres.query(pg, "SELECT relname FROM pg_class WHERE relname LIKE 'chunks\\_%' AND relkind = 'r'")[
            0
        ]
        assert postgres.query(pg, f"SELECT pg_column_compression(_jsonb) FROM m.{table}") == [["lz4"]]
    finally:
        server.stop()
        shutil.rmtree(tmp_path / "f", ignore_errors=True)

"""The dev cluster keeps only indexes FerretDB's queries use: its equality filters (`_jsonb -> 'f' @> v`)
are answered by GIN indexes, so a non-unique btree FerretDB creates becomes the GIN index of its first
field under its own name (every insert and update maintained both before); unique btrees stay."""

import asyncio
import os
import shutil
import signal

import pytest
from pymongo import AsyncMongoClient, IndexModel

from nexus.dev import postgres
from nexus.dev.servers import start_ferretdb

pytestmark = pytest.mark.infra

INDEXES = "SELECT c.relname, a.amname, x.indisunique, pg_get_indexdef(x.indexrelid, 1, false) FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'm' AND x.indrelid::regclass::text LIKE 'm.t\\_%'"


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def _rows(port: int, sql: str) -> list[list[str]]:
    res = postgres._psql(port, "\\pset tuples_only on\n\\pset format unaligned\n" + sql)
    assert res.returncode == 0, res.stderr
    return [line.split("|") for line in res.stdout.splitlines() if line]


def _lean(port: int) -> list[list[str]]:
    rows = _rows(port, INDEXES)
    assert not [r for r in rows if r[1] == "btree" and r[2] == "f"], rows  # no non-unique btree left
    gins = {r[3] for r in rows if r[1] == "gin"}
    for field in ("_id", "status", "priority", "page", "k"):
        assert f"((_jsonb -> '{field}'::text))" in gins, (field, rows)
    return rows


async def _use(url: str, port: int) -> None:
    client: AsyncMongoClient = AsyncMongoClient(url)
    try:
        coll = client["m"]["t"]
        await coll.create_indexes(
            [
                IndexModel([("status", 1), ("priority", -1)]),
                IndexModel([("page", 1)]),
                IndexModel([("k", 1)], unique=True),
            ]
        )
        await coll.insert_many(
            [{"_id": i, "status": "a" if i % 2 else "b", "page": i // 32, "k": i} for i in range(200)]
        )
        rows = _lean(port)
        assert {r[0] for r in rows if r[1] == "gin"} >= {
            r[0] for r in rows if r[0].startswith("t_") and ("status" in r[0] or "page" in r[0])
        }
        assert await coll.count_documents({"status": "a"}) == 100
        assert await coll.count_documents({"page": 3}) == 32
        assert sorted(await coll.index_information()) == ["_id_", "k_1", "page_1", "status_1_priority_-1"]
        await coll.drop_index("page_1")  # FerretDB drops it by its name: the GIN index carries that name
        assert sorted(await coll.index_information()) == ["_id_", "k_1", "status_1_priority_-1"]
        assert "((_jsonb -> 'page'::text))" not in {r[3] for r in _rows(port, INDEXES)}
    finally:
        await client.close()


def test_ferretdbs_non_unique_btrees_become_gin_indexes(tmp_path) -> None:
    if not postgres.available():
        pytest.skip("PostgreSQL is not installed")
    server = start_ferretdb(tmp_path / "f", log_path=tmp_path / "f.log", handler="postgresql")
    try:
        asyncio.run(_use(server.url, _port(server.backing[0].url)))
    finally:
        server.stop()
        shutil.rmtree(tmp_path / "f", ignore_errors=True)


def test_a_cluster_kept_across_starts_is_made_lean_when_started(tmp_path) -> None:
    """Btrees made before the trigger did this (a `make run` cluster from before) are converted at start."""
    if not postgres.available():
        pytest.skip("PostgreSQL is not installed")
    pg = postgres.start_postgres(tmp_path / "pg")
    port = _port(pg.url)
    try:
        made = postgres._psql(
            port,
            "ALTER EVENT TRIGGER nexus_gin_companions DISABLE;"
            "CREATE SCHEMA m; CREATE TABLE m.t_1 (_jsonb jsonb);"
            "CREATE UNIQUE INDEX t_1_id ON m.t_1 ((_jsonb -> '_id'));"
            "CREATE INDEX t_1_status_priority ON m.t_1 ((_jsonb -> 'status'), (_jsonb -> 'priority'));"
            "CREATE INDEX t_1_page ON m.t_1 ((_jsonb -> 'page'));"
            "CREATE INDEX t_1_page_gin ON m.t_1 USING gin ((_jsonb -> 'page') jsonb_path_ops);"
            "CREATE UNIQUE INDEX t_1_k ON m.t_1 ((_jsonb -> 'k'));"
            "ALTER EVENT TRIGGER nexus_gin_companions ENABLE;",
        )
        assert made.returncode == 0, made.stderr
        os.killpg(pg.proc.pid, signal.SIGKILL)  # stopped, a throw-away cluster would be removed
        pg.proc.wait()
        pg = postgres.start_postgres(tmp_path / "pg", port=port)
        names = {r[0]: r[1] for r in _lean(port)}
        assert names["t_1_status_priority"] == "gin" and names["t_1_page"] == "gin"
        assert names["t_1_id"] == "btree" and names["t_1_k"] == "btree"
        assert names["t_1_page_gin"] == "gin"  # an index nexus did not make is left as it was
    finally:
        pg.stop()

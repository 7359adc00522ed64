"""Group commit of inserts on the real database: concurrent callers' documents go out in few
commands, each caller still learns the fate of its own document and only of its own."""

import asyncio
import uuid
from pathlib import Path

import pytest
from beanie import init_beanie
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError
from pymongo.monitoring import CommandListener

from nexus.db.connection import connect_db
from nexus.db.documents import ALL_DOCUMENTS, AuditEntry
from nexus.db.group import GroupInsert, GroupWriteFailed
from nexus.dev.servers import start_ferretdb

pytestmark = pytest.mark.infra


class Inserts(CommandListener):
    def __init__(self) -> None:
        self.commands = 0

    def started(self, event) -> None:
        if event.command_name == "insert" and event.command.get("insert") == "audit_entries":
            self.commands += 1

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


@pytest.fixture
async def counted(mongo_url: str):
    inserts = Inserts()
    client = await connect_db(mongo_url, f"grp_{uuid.uuid4().hex[:8]}", create_indexes=False, listeners=[inserts])
    yield inserts
    await client.close()


def entry(n: int, **fields) -> AuditEntry:
    fields = {"action": "task.create", **fields}
    return AuditEntry(id=f"aud_{uuid.uuid4().hex}", actor="key_1", resource=f"tasks/{n}", **fields)


async def test_concurrent_inserts_go_out_together_and_each_is_stored_as_insert_stores_it(counted: Inserts) -> None:
    group = GroupInsert(AuditEntry)
    entries = [entry(i, after_id=f"task_{i}") for i in range(40)]
    await asyncio.gather(*(group.insert(e) for e in entries))
    assert counted.commands <= 8, counted.commands  # one per batch: the first, then what waited for it
    alone = entry(99)
    await alone.insert()  # beanie's own path, for comparison
    stored = {d["_id"]: d for d in await AuditEntry.get_pymongo_collection().find({}).to_list()}
    assert len(stored) == 41
    assert set(stored[entries[0].id]) == set(stored[alone.id])  # the same fields, the bucket included
    for e in entries:
        doc = stored[e.id]
        assert (doc["resource"], doc["after_id"], doc["page"]) == (e.resource, e.after_id, e.page)
        assert doc["page"] is not None


async def test_a_taken_id_fails_only_its_own_caller(counted: Inserts) -> None:
    group = GroupInsert(AuditEntry)
    first = entry(0)
    await group.insert(first)
    others = [entry(i) for i in range(1, 10)]
    again = entry(0, action="other")
    again.id = first.id
    results = await asyncio.gather(
        *(group.insert(e) for e in [*others[:5], again, *others[5:]]), return_exceptions=True
    )
    assert isinstance(results[5], DuplicateKeyError), results
    assert [r for i, r in enumerate(results) if i != 5] == [None] * 9
    assert (await AuditEntry.get(first.id)).action == "task.create"  # the stored one is untouched
    assert await AuditEntry.find({"_id": {"$in": [e.id for e in others]}}).count() == 9


async def test_a_document_that_spoils_the_command_fails_only_its_own_caller(counted: Inserts) -> None:
    group = GroupInsert(AuditEntry)
    others = [entry(i) for i in range(8)]
    spoiled = entry(8, before_id="a\x00b")  # PostgreSQL cannot hold a NUL
    results = await asyncio.gather(
        *(group.insert(e) for e in [*others[:4], spoiled, *others[4:]]), return_exceptions=True
    )
    assert isinstance(results[4], GroupWriteFailed), results
    assert [r for i, r in enumerate(results) if i != 4] == [None] * 8
    assert await AuditEntry.find({"_id": {"$in": [e.id for e in others]}}).count() == 8
    assert await AuditEntry.get(spoiled.id) is None


async def test_a_lost_database_fails_the_batch_callers_and_the_next_batch_is_written(tmp_path: Path) -> None:
    server = start_ferretdb(tmp_path / "db", handler="sqlite")
    client: AsyncMongoClient = AsyncMongoClient(server.url, tz_aware=True, serverSelectionTimeoutMS=3000)
    try:
        await init_beanie(database=client["lost"], document_models=ALL_DOCUMENTS, skip_indexes=True)
        group = GroupInsert(AuditEntry)
        await group.insert(entry(0))  # the bucket counter is taken while the server is up
        port = server.url.rsplit(":", 1)[1].strip("/")
        server.stop()
        lost = [entry(i) for i in range(1, 6)]
        results = await asyncio.wait_for(
            asyncio.gather(*(group.insert(e) for e in lost), return_exceptions=True), timeout=60
        )
        assert all(isinstance(r, GroupWriteFailed) for r in results), results
        server = start_ferretdb(tmp_path / "db", port=int(port), handler="sqlite")
        later = entry(7)
        await asyncio.wait_for(group.insert(later), timeout=60)
        assert (await AuditEntry.get(later.id)).resource == later.resource
        assert await AuditEntry.find({"_id": {"$in": [e.id for e in lost]}}).count() == 0
    finally:
        await client.close()
        server.stop()

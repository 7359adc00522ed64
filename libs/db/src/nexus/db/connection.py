"""Connecting to MongoDB (or FerretDB) and registering the documents with beanie."""

from collections.abc import Callable
from typing import TypeAlias, TypeVar

from beanie import init_beanie
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.monitoring import CommandListener

from nexus.db.documents import ALL_DOCUMENTS, Run, Schedule, Task
from nexus.db.stats import CommandStats
from nexus.db.writes import update_document, written
from nexus.domain.json_types import JsonObject

# The documents that carry an optimistic-concurrency `version` (update_versioned).
V = TypeVar("V", Task, Run, Schedule)
# The client connect_db returns: raw reads come back as plain JSON objects.
DbClient: TypeAlias = AsyncMongoClient[JsonObject]
Database: TypeAlias = AsyncDatabase[JsonObject]


async def connect_db(
    url: str, database: str, *, create_indexes: bool = True, listeners: list[CommandListener] | None = None
) -> DbClient:
    client: DbClient = AsyncMongoClient(
        url, tz_aware=True, serverSelectionTimeoutMS=10_000, event_listeners=[*(listeners or []), CommandStats()]
    )
    await init_beanie(database=client[database], document_models=ALL_DOCUMENTS, skip_indexes=True)
    if create_indexes:
        await ensure_indexes()
    return client


async def ensure_indexes() -> None:
    """One createIndexes call per index: FerretDB v1.24 drops the connection when a single call
    re-creates several indexes that already exist, so beanie's own index sync is turned off."""
    for doc in ALL_DOCUMENTS:
        coll = doc.get_pymongo_collection()
        for model in getattr(doc.Settings, "indexes", []):
            await coll.create_indexes([model])


async def ping(client: DbClient) -> bool:
    await client.admin.command("ping")
    return True


class Conflict(Exception):
    """The document changed between read and write too many times."""


async def update_versioned(
    doc_cls: type[V], doc_id: str, mutate: Callable[[V], JsonObject | None], *, attempts: int = 8
) -> V | None:
    """Read, let `mutate(doc)` return the fields to $set (or None for no change), and write only if
    nobody else wrote in between (single-document compare-and-set on `version`). Returns the
    new document, or None when mutate declined. No transactions needed; on FerretDB the
    compare-and-set holds because updates of one document are serialized (nexus.db.writes).

    The first try starts from the document as this process last wrote it, when it has it
    (nexus.db.writes.written): a run's several transitions then cost one write each, not a read
    and a write. If anyone wrote since, the version no longer matches and the next try reads; a
    decline on the kept copy is asked again of the stored document."""
    from nexus.db.documents import now

    doc: V | None = written.take(doc_cls, doc_id)
    kept = doc is not None
    for _ in range(attempts):
        if doc is None:
            kept = False
            doc = await doc_cls.get(doc_id)
            if doc is None:
                return None
        changes = mutate(doc)
        if not changes:
            if kept:
                # Declined on the copy this process kept: another writer (a second core-api, an
                # operator's tool) may have moved the document since, so the stored one decides.
                doc = None
                continue
            return None
        changes = {**changes, "updated_at": now()}
        res = await update_document(
            doc_cls, doc_id, {"$set": changes, "$inc": {"version": 1}}, {"version": doc.version}
        )
        if res.modified_count == 1:
            for k, v in changes.items():
                setattr(doc, k, v)
            doc.version += 1
            written.keep(doc_cls, doc_id, doc)
            return doc
        written.forget(doc_cls, doc_id)
        doc = None
    raise Conflict(f"{doc_cls.__name__} {doc_id} kept changing")

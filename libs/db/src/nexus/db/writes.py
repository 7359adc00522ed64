"""Updates of one document, serialized per document within this process.

FerretDB v1 on SQLite applies an update as read, change, write back — not atomically: of two
concurrent updates of one document, one is usually lost, and two compare-and-set updates with the
same condition usually both "win" (measured: 198 of 200 and 195 of 200 pairs). core-api is the only
writer of its collections, so taking a per-document lock around every update makes conditional
updates hold on FerretDB too. On MongoDB single-document updates are atomic anyway and the lock
only costs an uncontended acquire; several core-api processes need MongoDB."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pymongo.results import UpdateResult

_locks: dict[tuple[str, Any], list] = {}  # (collection, _id) -> [lock, holders and waiters]


@asynccontextmanager
async def document_lock(doc_cls: Any, doc_id: Any) -> AsyncIterator[None]:
    key = (doc_cls.get_pymongo_collection().name, doc_id)
    entry = _locks.get(key)
    if entry is None:
        entry = _locks[key] = [asyncio.Lock(), 0]
    entry[1] += 1
    try:
        async with entry[0]:
            yield
    finally:
        entry[1] -= 1
        if not entry[1]:
            del _locks[key]


async def update_document(doc_cls: Any, doc_id: Any, update: dict, conditions: dict | None = None, *,
                          upsert: bool = False) -> UpdateResult:
    """`update_one({"_id": doc_id, **conditions}, update)`, serialized with every other update of the document.
    An upsert of a paged document (nexus.db.paging) inserts it with its bucket."""
    if upsert:
        from nexus.db.paging import PagedDocument, allocate

        if isinstance(doc_cls, type) and issubclass(doc_cls, PagedDocument) and "page" not in update.get("$set", {}):
            update = {**update, "$setOnInsert": {**update.get("$setOnInsert", {}), "page": await allocate(doc_cls)}}
    async with document_lock(doc_cls, doc_id):
        return await doc_cls.get_pymongo_collection().update_one(
            {"_id": doc_id, **(conditions or {})}, update, upsert=upsert
        )

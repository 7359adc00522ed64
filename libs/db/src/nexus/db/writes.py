"""Updates of one document, serialized per document within this process.

FerretDB v1 on SQLite applies an update as read, change, write back — not atomically: of two
concurrent updates of one document, one is usually lost, and two compare-and-set updates with the
same condition usually both "win" (measured: 198 of 200 and 195 of 200 pairs). core-api is the only
writer of its collections, so taking a per-document lock around every update makes conditional
updates hold on FerretDB too. On MongoDB single-document updates are atomic anyway and the lock
only costs an uncontended acquire; several core-api processes need MongoDB."""

import asyncio
import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from beanie import Document
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.results import UpdateResult

from nexus.domain.json_types import JsonObject

_locks: dict[tuple[str, Any], list[Any]] = {}  # (collection, _id) -> [lock, holders and waiters]


class Written:
    """Documents as this process's last versioned write left them (nexus.db.connection.update_versioned).
    Any other update of the document forgets it; callers get copies (`take`), so a caller that
    changes one without writing never leaves a changed document behind. Stale copies are harmless:
    the compare-and-set on `version` refuses them and the caller reads the document."""

    def __init__(self, max_entries: int = 2_000) -> None:
        # Enough for the documents of every run in flight (a run, its task, its session); past it the
        # least recently written is let go (a later update of it reads first), so memory stays flat
        # however much history passes through.
        self.max_entries = max_entries
        self.docs: dict[tuple[str, Any], Any] = {}

    def take(self, doc_cls: Any, doc_id: Any) -> Any:
        """A copy of the kept document to change; the kept one stays (a caller that declines to write
        leaves it as it was)."""
        kept = self.docs.get((doc_cls.get_pymongo_collection().name, doc_id))
        return None if kept is None else copy_document(kept)

    def peek(self, doc_cls: Any, doc_id: Any) -> Any:
        """The kept document, to read only (an API response), or None."""
        return self.docs.get((doc_cls.get_pymongo_collection().name, doc_id))

    def keep(self, doc_cls: Any, doc_id: Any, doc: Any) -> None:
        key = (doc_cls.get_pymongo_collection().name, doc_id)
        self.docs.pop(key, None)  # re-inserted below: the dict's order is the order of last writes
        while len(self.docs) >= self.max_entries:
            del self.docs[next(iter(self.docs))]
        # A copy: the caller keeps (and may change) the document it was returned. Its times as the
        # database holds them (milliseconds), so a response made from it reads as one made from a read.
        kept = copy_document(doc)
        for name, value in list(vars(kept).items()):
            if isinstance(value, datetime):
                setattr(kept, name, value.replace(microsecond=value.microsecond // 1000 * 1000))
        self.docs[key] = kept

    def forget(self, doc_cls: Any, doc_id: Any) -> None:
        self.docs.pop((doc_cls.get_pymongo_collection().name, doc_id), None)


written = Written()

_IMMUTABLE = (str, int, float, bool, type(None), datetime)


def copy_document(doc: Any) -> Any:
    """A deep copy of a document whose fields hold JSON-like values (dicts, lists, scalars, times):
    a third of pydantic's deep copy's time for a run (copy.deepcopy's memo is the cost), and the
    copies are made at every versioned write. Anything else inside is deep-copied the usual way."""
    copied = doc.model_copy()
    fields = copied.__dict__
    for name, value in fields.items():
        if type(value) not in _IMMUTABLE:
            fields[name] = _clone(value)
    return copied


def _clone(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _IMMUTABLE else _clone(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _IMMUTABLE else _clone(v) for v in value]
    if kind in _IMMUTABLE:
        return value
    return copy.deepcopy(value)


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


async def update_document(
    doc_cls: type[Document],
    doc_id: Any,
    update: JsonObject,
    conditions: JsonObject | None = None,
    *,
    upsert: bool = False,
    beside_versioned: bool = False,
) -> UpdateResult:
    """`update_one({"_id": doc_id, **conditions}, update)`, serialized with every other update of the document.
    An upsert of a paged document (nexus.db.paging) inserts it with its bucket. `beside_versioned`:
    the update sets only fields no versioned update reads or writes (a heartbeat's time), so the copy
    `written` keeps stays good for the next versioned update (it never writes those fields back)."""
    if upsert:
        from nexus.db.paging import PagedDocument, allocate

        if isinstance(doc_cls, type) and issubclass(doc_cls, PagedDocument) and "page" not in update.get("$set", {}):
            update = {**update, "$setOnInsert": {**update.get("$setOnInsert", {}), "page": await allocate(doc_cls)}}
    if not beside_versioned:
        written.forget(doc_cls, doc_id)
    async with document_lock(doc_cls, doc_id):
        return await doc_cls.get_pymongo_collection().update_one(
            {"_id": doc_id, **(conditions or {})}, update, upsert=upsert
        )


DUPLICATE_KEY = 11000


async def insert_fresh(coll: Any, docs: list[JsonObject]) -> list[JsonObject]:
    """One unordered insert_many; returns the documents refused because their id is stored already
    (a redelivery), and raises any other failure."""
    if not docs:
        return []
    try:
        await coll.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return [docs[e["index"]] for e in errors]
    except DuplicateKeyError:
        return list(docs)
    return []

"""Group commit of inserts: documents that concurrent callers insert into one collection are written
together, one unordered `insert_many` per batch, each caller still waiting for its own document.

While a batch is being written, the documents that arrive wait and go out as the next batch: an
idle process writes at once (a batch of one, no added latency), a busy one writes fewer, larger
commands. Each caller's guarantee is the one `insert()` gives: its await returns once its document
is stored, and raises when it was not — `DuplicateKeyError` for a document whose id is taken (the
others of the batch are stored: the insert is unordered), `GroupWriteFailed` when it was not stored for
any other reason. A command that fails as a whole is tried again one document at a time (a document
that spoils it fails only its own caller), unless the connection was lost: then every caller of that
batch, and only of that batch, gets the error (its document is not known stored).
Documents are encoded as beanie's `insert` encodes them, and paged documents take their bucket
(`nexus.db.paging`) before they join a batch, so what is stored is what `insert()` would store."""

import asyncio
from typing import Any

import bson
from beanie import Document
from beanie.odm.utils.dump import get_dict
from pymongo.errors import BulkWriteError, ConnectionFailure, DuplicateKeyError, PyMongoError

from nexus.db.paging import PagedDocument, allocate
from nexus.db.writes import DUPLICATE_KEY

MAX_BATCH = 500


class GroupWriteFailed(Exception):
    """The database did not store the batch this caller's document went out in (the cause is chained)."""

    def __init__(self, collection: str, size: int, cause: BaseException) -> None:
        # The cause stays out of the message (it may quote another caller's document); it is chained.
        super().__init__(f"the database did not store the write of {size} document(s) to {collection}")
        self.collection = collection
        self.__cause__ = cause


class GroupInsert:
    """The batches of one collection (see the module's doc)."""

    def __init__(self, doc_cls: type[Document], max_batch: int = MAX_BATCH) -> None:
        self.doc_cls = doc_cls
        self.max_batch = max_batch
        self.pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self.writer: asyncio.Task[None] | None = None
        self.batches = 0  # commands sent (what a test or a benchmark compares with the documents)

    async def insert(self, doc: Document) -> None:
        if isinstance(doc, PagedDocument) and doc.page is None:
            doc.page = await allocate(type(doc))
        await self.insert_raw(get_dict(doc, to_db=True, keep_nulls=doc.get_settings().keep_nulls))

    async def insert_raw(self, raw: dict[str, Any]) -> None:
        """A document already as stored (its bucket taken, if paged), for a caller that makes it itself."""
        loop = asyncio.get_running_loop()
        if self.writer is not None and self.writer.get_loop() is not loop:  # a loop that ended (tests)
            self.writer, self.pending = None, []
        done: asyncio.Future[None] = loop.create_future()
        # Retrieved here too: a caller that went away leaves no "exception never retrieved" behind.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.pending.append((raw, done))
        if self.writer is None:
            # Its own task: a caller that goes away (a dropped request) never strands the others.
            self.writer = asyncio.create_task(self._write_all(), name=f"group insert {self.doc_cls.__name__}")
        # The batch is written whatever happens to this caller; its outcome is still this caller's.
        await asyncio.shield(done)

    async def _write_all(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
                try:
                    await self._write(batch)
                except BaseException as exc:  # cancelled (shutdown): no caller waits forever
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(GroupWriteFailed(self.doc_cls.__name__, len(batch), exc))
                    raise
        finally:
            self.writer = None

    async def _write(self, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        coll = self.doc_cls.get_pymongo_collection()
        refused: dict[int, BaseException] = {}
        try:
            await coll.insert_many([raw for raw, _ in batch], ordered=False)
        except BulkWriteError as exc:
            for err in exc.details.get("writeErrors", []):
                if err.get("code") == DUPLICATE_KEY:
                    refused[err["index"]] = DuplicateKeyError(err.get("errmsg", "duplicate key"), DUPLICATE_KEY, err)
                else:
                    refused[err["index"]] = GroupWriteFailed(coll.name, 1, PyMongoError(err.get("errmsg", "")))
            if exc.details.get("writeConcernErrors"):  # stored, but not as durably as asked: nobody's is sure
                failed = GroupWriteFailed(coll.name, len(batch), exc)
                refused = dict.fromkeys(range(len(batch)), failed)
        except Exception as exc:  # noqa: BLE001 — handed to each caller of the batch, raised there
            if len(batch) > 1 and not isinstance(exc, ConnectionFailure):
                await self._one_by_one(coll, batch)
                return
            failed = GroupWriteFailed(coll.name, len(batch), exc)
            refused = dict.fromkeys(range(len(batch)), failed)
        self.batches += 1
        for i, (_, done) in enumerate(batch):
            if done.done():
                continue
            if i in refused:
                done.set_exception(refused[i])
            else:
                done.set_result(None)

    async def _one_by_one(self, coll: Any, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        """One document may have spoiled the command (the server refused it as a whole, e.g. a value
        the storage cannot hold) after storing some of the others (an unordered insert goes on past a
        failure): what is stored as sent is done, the rest is tried alone, so the document at fault
        fails only its own caller. (A lost connection would fail each again: not tried this way.)"""
        ids = [raw["_id"] for raw, _ in batch]
        stored = {d["_id"]: d async for d in coll.find({"_id": {"$in": ids}})}
        for item in batch:
            raw, done = item
            if stored.get(raw["_id"]) == as_stored(raw, coll.codec_options):
                if not done.done():
                    done.set_result(None)
            else:
                await self._write([item])


def as_stored(raw: dict[str, Any], codec_options: Any) -> dict[str, Any]:
    """The document as the database gives it back (BSON's millisecond times)."""
    return bson.decode(bson.encode(raw, codec_options=codec_options), codec_options=codec_options)


_groups: dict[str, GroupInsert] = {}


def group_of(doc_cls: type[Document]) -> GroupInsert:
    """The batches of doc_cls's collection (one per collection and database in this process)."""
    key = doc_cls.get_pymongo_collection().full_name
    group = _groups.get(key)
    if group is None:
        group = _groups[key] = GroupInsert(doc_cls)
    return group


async def insert_grouped(doc: Document) -> None:
    """`await doc.insert()`, written in one command with the inserts other callers make meanwhile."""
    await group_of(type(doc)).insert(doc)


async def insert_grouped_raw(doc_cls: type[Document], raw: dict[str, Any]) -> None:
    """`insert_grouped` of a document the caller encoded itself (see `nexus.db.audit`)."""
    await group_of(doc_cls).insert_raw(raw)

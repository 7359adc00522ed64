"""Sessions as core-api stores them: opened by the runner per attempt; each attempt's changes kept
apart (its own chain, seq from 0), each stored once."""

from collections.abc import Awaitable, Callable

import msgspec
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from nexus.db.documents import Session, SessionChangeRecord, now
from nexus.db.paging import allocate
from nexus.db.writes import insert_fresh, update_document
from nexus.domain.json_types import JsonObject
from nexus.domain.sessions import NoteChange
from nexus.events.payloads import SessionChanged, SessionOpened

DUPLICATE_KEY = 11000
# (session, attempt) this process stored as opened: a first change of it needs no upsert of its own.
_opened: set[tuple[str, int]] = set()
# Set by `insert_sessions` on a document the database refused (its session is stored already).
REFUSED = "__refused"

# Stores one new session document, possibly with other writers' documents; says whether it was stored.
Inserter = Callable[[JsonObject], Awaitable[bool]]


async def on_opened(run_id: str, ev: SessionOpened, seq: int = 0, insert: Inserter | None = None) -> None:
    """The session's status as its run reports it (active, then completed or error). A report only
    replaces one that came before it on the stream (`seq`, its stream sequence): a redelivered
    `active` held by a killed core-api must not reopen a session that has since completed.
    `insert`: a session not stored yet is inserted through it (ingestion's group commit: one
    insert_many carries the sessions of every run ingested at once, where an upsert is a command each
    and, on FerretDB, a read and a write); a session stored already is refused by its id and
    upserted as before."""
    fields = {
        "status": ev.status,
        "updated_at": now(),
        "backend": ev.backend,
        "project_path": ev.project_path,
        "opened_seq": seq,
        **({"sandbox": ev.sandbox} if ev.sandbox else {}),  # a runner that does not say leaves it as it was
    }
    later = {"$or": [{"opened_seq": {"$lt": seq}}, {"opened_seq": None}]}
    if (ev.session_id, ev.attempt) in _opened:
        # This process stored it open for this attempt: the upsert would change nothing (no insert, the
        # same attempt), so the later report is one conditional write, not two.
        await update_document(Session, ev.session_id, {"$set": fields}, later)
        return
    if insert is not None and await insert(await new_session(run_id, ev, fields)):
        _remember_opened(ev)
        return
    res = await update_document(
        Session,
        ev.session_id,
        {
            "$max": {"attempt": ev.attempt},
            "$setOnInsert": {
                "run_id": run_id,
                "parent_session_id": ev.parent_session_id,
                "notes": [],
                "changes": [],
                "created_at": now(),
                **fields,
            },
        },
        upsert=True,
    )
    if res.upserted_id is None:
        await update_document(Session, ev.session_id, {"$set": fields}, later)
    _remember_opened(ev)


def _remember_opened(ev: SessionOpened) -> None:
    if len(_opened) > 100_000:
        _opened.clear()
    _opened.add((ev.session_id, ev.attempt))


async def new_session(run_id: str, ev: SessionOpened, fields: JsonObject) -> JsonObject:
    """The session as the upsert of its first report stores it."""
    return {
        "_id": ev.session_id,
        "attempt": ev.attempt,
        "run_id": run_id,
        "parent_session_id": ev.parent_session_id,
        "notes": [],
        "changes": [],
        "created_at": now(),
        **fields,
        "page": await allocate(Session),
    }


async def insert_sessions(coll: AsyncCollection[JsonObject], docs: list[JsonObject]) -> None:
    """One insert_many of new sessions; each one refused as stored already is marked `REFUSED`."""
    for doc in await insert_fresh(coll, docs):
        doc[REFUSED] = True


def change_record(run_id: str, ev: SessionChanged) -> JsonObject:
    """The stored form of one change; its id refuses a second copy of the same (session, attempt, seq)."""
    return {
        "_id": SessionChangeRecord.key(ev.session_id, ev.attempt, ev.change.seq),
        "session_id": ev.session_id,
        "run_id": run_id,
        "attempt": ev.attempt,
        "seq": ev.change.seq,
        "change": msgspec.to_builtins(ev.change),
        "note": ev.change.message if isinstance(ev.change, NoteChange) else None,
    }


async def insert_new(coll: AsyncCollection[JsonObject], docs: list[JsonObject]) -> int:
    """insert_many that skips documents already stored (a redelivery); returns how many were new."""
    if not docs:
        return 0
    try:
        return len((await coll.insert_many(docs, ordered=False)).inserted_ids)
    except BulkWriteError as exc:
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise
        return int(exc.details.get("nInserted", 0))
    except DuplicateKeyError:
        return 0


async def store_changes(records: list[JsonObject]) -> int:
    """Insert change records; a redelivered one is refused by its id and skipped."""
    return await insert_new(SessionChangeRecord.get_pymongo_collection(), records)


async def ensure_session(run_id: str, ev: SessionChanged) -> None:
    """A change that outran its session's "opened" still has a session to belong to."""
    if (ev.session_id, ev.attempt) in _opened:
        return  # stored when it opened: the upsert would change nothing
    await update_document(
        Session,
        ev.session_id,
        {
            "$setOnInsert": {
                "run_id": run_id,
                "parent_session_id": ev.parent_session_id,
                "status": "active",
                "backend": "",
                "project_path": "",
                "notes": [],
                "changes": [],
                "created_at": now(),
                "updated_at": now(),
            },
            "$max": {"attempt": ev.attempt},
        },
        upsert=True,
    )


async def on_change(run_id: str, ev: SessionChanged) -> None:
    await store_changes([change_record(run_id, ev)])
    if ev.change.seq == 0:
        await ensure_session(run_id, ev)

"""core-api's own record of each ledger entry's hash, written as the run reports it.

A session's stored changes carry their own hash chain (nexus.domain.ledger), which proves only that
the chain is consistent with itself: a truncated or wholly re-sealed chain is consistent too, and a
run may report whatever final hash matches it. The record is a second witness, kept where the run
cannot write: one document per (run, attempt, session, seq) holding the hash as it first arrived.
A later report of the same entry with another hash is kept beside it as a conflict, never over it."""

from typing import Any

from pymongo.errors import DuplicateKeyError

from nexus.db.documents import Run, Session

COLLECTION = "ledger_records"


def _collection() -> Any:
    return Session.get_pymongo_collection().database[COLLECTION]


def record_id(run_id: str, attempt: int, session_id: str, seq: int) -> str:
    return f"{run_id}:{attempt}:{session_id}:{seq}"


async def record_change(run: Run, session_id: str, change: Any, attempt: int | None = None) -> None:
    """Called by run-event ingestion for every session change, before the change is stored."""
    attempt = attempt or run.attempt
    seq, hash_ = int(change.seq), str(change.hash)
    doc = {"_id": record_id(run.id, attempt, session_id, seq), "run_id": run.id, "attempt": attempt,
           "session_id": session_id, "seq": seq, "hash": hash_, "prev_hash": str(change.prev_hash)}
    coll = _collection()
    try:
        await coll.insert_one(doc)
    except DuplicateKeyError:  # redelivered (same hash: nothing to do) or re-reported with another hash
        await coll.update_one({"_id": doc["_id"], "hash": {"$ne": hash_}}, {"$addToSet": {"conflicts": hash_}})


async def records_of(run_id: str) -> list[dict]:
    return (
        await _collection().find({"run_id": run_id}).sort([("attempt", 1), ("session_id", 1), ("seq", 1)]).to_list(None)
    )

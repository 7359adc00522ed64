"""core-api's own record of each ledger entry's hash, written as the run reports it.

A session's stored changes carry their own hash chain (nexus.domain.ledger), which proves only that
the chain is consistent with itself: a truncated or wholly re-sealed chain is consistent too, and a
run may report whatever final hash matches it. The record is a second witness, kept where the run
cannot write: one document per (run, attempt, session, seq) holding the hash as it first arrived.
A later report of the same entry with another hash is kept beside it as a conflict, never over it."""

from typing import Any, cast

from nexus.db.documents import Run, Session
from nexus.db.writes import insert_fresh
from nexus.domain.json_types import JsonObject

COLLECTION = "ledger_records"


_made: list[Any] = []  # [database, its collection]: a collection object costs more to make than to keep


def collection() -> Any:
    db = Session.get_pymongo_collection().database
    if not _made or _made[0] is not db:
        _made[:] = [db, db[COLLECTION]]
    return _made[1]


def record_id(run_id: str, attempt: int, session_id: str, seq: int) -> str:
    return f"{run_id}:{attempt}:{session_id}:{seq}"


def record_doc(run_id: str, attempt: int, session_id: str, change: Any) -> JsonObject:
    """The record of one reported ledger entry, keyed by (run, attempt, session, seq)."""
    seq = int(change.seq)
    return {
        "_id": record_id(run_id, attempt, session_id, seq),
        "run_id": run_id,
        "attempt": attempt,
        "session_id": session_id,
        "seq": seq,
        "hash": str(change.hash),
        "prev_hash": str(change.prev_hash),
    }


async def insert_records(coll: Any, docs: list[JsonObject]) -> None:
    """Store records in one insert_many. An entry already recorded keeps its first hash; a report with
    another hash is kept beside it as a conflict (a redelivery with the same hash changes nothing);
    within one batch the earliest report is the first."""
    first: dict[str, JsonObject] = {}
    refused: list[JsonObject] = []
    for doc in docs:  # an unordered insert may apply a batch in any order: the first report is chosen here
        if doc["_id"] in first:
            refused.append(doc)
        else:
            first[doc["_id"]] = doc
    refused = await insert_fresh(coll, list(first.values())) + refused
    for doc in refused:
        await coll.update_one(
            {"_id": doc["_id"], "hash": {"$ne": doc["hash"]}}, {"$addToSet": {"conflicts": doc["hash"]}}
        )


async def record_change(run: Run, session_id: str, change: Any, attempt: int | None = None) -> None:
    """One entry's record, before the change is stored (ingestion batches them with `insert_records`)."""
    await insert_records(collection(), [record_doc(run.id, attempt or run.attempt, session_id, change)])


async def records_of(run_id: str) -> list[JsonObject]:
    return cast(
        list[JsonObject],
        (  # the records as stored (raw reads)
            await collection()
            .find({"run_id": run_id})
            .sort([("attempt", 1), ("session_id", 1), ("seq", 1)])
            .to_list(None)
        ),
    )

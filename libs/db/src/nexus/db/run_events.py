"""A run's events as stored: insert-only chunks, one document per run per ingested batch.

FerretDB's cost is per document, per command and per field it converts, so core-api stores the
events of one run that one fetch brought as ONE document: the run id, the first and last stream
sequence, the event types it holds, and the events themselves in stream order as one JSON array
in a binary field (one field for FerretDB to carry, however many events); its model calls, which
budgets read on their own, in a chunk of their own. The chunk's id is
`<run_id>:<first seq>`, so a batch handed out again whole is refused by the primary key; a
redelivery cut differently is filtered against what is stored before it is written (`unstored`),
and readers take each event once by its envelope id whatever happened (`_unique`). Reads decode
the chunks: the run's events in stream order, exactly as when each event was its own document —
which the `run_events` collection still holds for events stored before chunks, and which are read too."""

from collections.abc import Iterable
from typing import Any

import msgspec
from pymongo.asynchronous.collection import AsyncCollection

from nexus.db.documents import RunEvent, RunEventChunk
from nexus.db.writes import insert_fresh
from nexus.domain.json_types import JsonObject

# A chunk's encoded events stay far below the 16 MiB document limit (an event may be up to 1 MiB).
CHUNK_BYTES = 4 * 1024 * 1024
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(list[dict[str, Any]]).decode


def event_doc(id_: str, type_: str, subject: str, stream_seq: int, occurred_at: str, data: Any) -> JsonObject:
    """One event as a chunk holds it; `data` its payload (a msgspec Struct, or a dict)."""
    return {
        "id": id_,
        "type": type_,
        "subject": subject,
        "stream_seq": stream_seq,
        "occurred_at": occurred_at,
        "data": data,
    }


# Read on their own (budgets sum a goal's or an agent's model calls on every run's end): kept in
# chunks of their own, so that read fetches those events, not every event of every run.
APART = frozenset({"run.llm"})


def chunk_docs(run_id: str, events: list[JsonObject]) -> list[JsonObject]:
    """The chunks of `events` (one run's, in stream order): one, plus one for the model calls among
    them, unless they are very large."""
    apart = [e for e in events if e["type"] in APART]
    if apart and len(apart) < len(events):
        return _chunked(run_id, [e for e in events if e["type"] not in APART]) + _chunked(run_id, apart)
    return _chunked(run_id, events)


def _chunked(run_id: str, events: list[JsonObject]) -> list[JsonObject]:
    out: list[JsonObject] = []
    part: list[bytes] = []
    size = 0
    first = last = 0
    types: set[str] = set()
    for e in events:
        body = _encode(e)
        if part and size + len(body) > CHUNK_BYTES:
            out.append(_chunk(run_id, first, last, types, part))
            part, size, types = [], 0, set()
        if not part:
            first = e["stream_seq"]
        part.append(body)
        size += len(body) + 1
        last = e["stream_seq"]
        types.add(e["type"])
    if part:
        out.append(_chunk(run_id, first, last, types, part))
    return out


def _chunk(run_id: str, first: int, last: int, types: set[str], bodies: list[bytes]) -> JsonObject:
    return {
        "_id": f"{run_id}:{first}",
        "run_id": run_id,
        "first_seq": first,
        "last_seq": last,
        "types": sorted(types),
        "events": b"[" + b",".join(bodies) + b"]",
    }


def _events(chunk: JsonObject) -> list[JsonObject]:
    return _decode(chunk["events"])


def collection() -> AsyncCollection[JsonObject]:
    return RunEventChunk.get_pymongo_collection()


async def _chunks(run_id: str, newest_first: bool = False) -> list[JsonObject]:
    # The run's chunks by equality on run_id (FerretDB pushes it down to the index); the order is
    # applied here, not asked of the server (FerretDB v1 never sorts in storage).
    docs = await collection().find({"run_id": run_id}).to_list(None)
    docs.sort(key=lambda c: (c["last_seq"], c["first_seq"]), reverse=newest_first)
    return docs


_no_legacy: set[str] = set()  # databases whose run_events collection was found empty: it stays so


async def _legacy_query(query: JsonObject, projection: JsonObject | None = None) -> list[JsonObject]:
    """Events stored one per document, before chunks (nothing writes there any more: a database
    found without any is not asked again)."""
    coll = RunEvent.get_pymongo_collection()
    if coll.database.name in _no_legacy:
        return []
    if await coll.find_one({}, {"_id": 1}) is None:
        _no_legacy.add(coll.database.name)
        return []
    return await coll.find(query, projection).to_list(None)


async def _legacy(run_id: str) -> list[JsonObject]:
    out = []
    for d in await _legacy_query({"run_id": run_id}):
        d["id"] = d.pop("_id")
        out.append(d)
    return out


def _unique(events: Iterable[JsonObject]) -> list[JsonObject]:
    """Each event once (by envelope id, its earliest copy), in stream order."""
    seen: dict[str, JsonObject] = {}
    for e in sorted(events, key=lambda e: e["stream_seq"]):
        seen.setdefault(e["id"], e)
    return list(seen.values())


def _model(run_id: str, e: JsonObject) -> RunEvent:
    return RunEvent(
        id=e["id"],
        run_id=run_id,
        type=e["type"],
        subject=e["subject"],
        stream_seq=e["stream_seq"],
        occurred_at=e["occurred_at"],
        data=e.get("data") or {},
    )


async def stored_ids(run_id: str) -> set[str]:
    """Envelope ids of the run's stored events."""
    ids = {e["id"] for e in await _legacy(run_id)}
    for c in await _chunks(run_id):
        ids.update(e["id"] for e in _events(c))
    return ids


async def unstored(run_id: str, events: list[JsonObject]) -> list[JsonObject]:
    """`events` less those already stored: what a redelivered batch still has to write."""
    known = await stored_ids(run_id)
    return [e for e in events if e["id"] not in known]


async def insert_chunks(coll: Any, docs: list[JsonObject]) -> None:
    """Insert chunks in one insert_many. A chunk refused because one with its id is stored (its first
    event was stored before) still has its events that are not stored yet written, as a chunk of their own."""
    for refused in await insert_fresh(coll, docs):
        rest = await unstored(refused["run_id"], _events(refused))
        if rest:
            await coll.insert_many(chunk_docs(refused["run_id"], rest), ordered=False)


async def events_of(run_id: str, *, newest: int | None = None) -> list[RunEvent]:
    """The run's events in stream order; with `newest`, only the last that many."""
    events = await _legacy(run_id)
    ids: set[str] = set()
    floor = None
    for c in await _chunks(run_id, newest_first=True):
        if newest is not None and len(ids) >= newest and floor is not None and c["last_seq"] < floor:
            break  # this chunk and every one after it hold only older events
        held = _events(c)
        events.extend(held)
        ids.update(e["id"] for e in held)
        floor = c["first_seq"] if floor is None else min(floor, c["first_seq"])
    unique = _unique(events)
    if newest is not None:
        unique = unique[-newest:] if newest > 0 else []
    return [_model(run_id, e) for e in unique]


async def of_type(run_ids: list[str], type_: str, *, since: str | None = None) -> list[tuple[str, JsonObject]]:
    """(run id, data) of the runs' events of one type, each event once; `since` an ISO time
    (`occurred_at` as runs write it) before which events are left out."""
    if not run_ids:
        return []
    runs: JsonObject = {"run_id": run_ids[0]} if len(run_ids) == 1 else {"run_id": {"$in": run_ids}}
    by_run: dict[str, list[JsonObject]] = {}
    async for c in collection().find({"types": type_, **runs}):
        by_run.setdefault(c["run_id"], []).extend(e for e in _events(c) if e["type"] == type_)
    for d in await _legacy_query({"type": type_, **runs}, {"run_id": 1, "stream_seq": 1, "occurred_at": 1, "data": 1}):
        d["id"] = d.pop("_id")
        by_run.setdefault(d["run_id"], []).append(d)
    return [
        (run_id, e.get("data") or {})
        for run_id, events in by_run.items()
        for e in _unique(events)
        if since is None or e.get("occurred_at", "") >= since
    ]


async def count(run_id: str | None = None) -> int:
    """How many distinct events are stored (of one run, or of every run)."""
    query = {} if run_id is None else {"run_id": run_id}
    ids: set[str] = set()
    async for c in collection().find(query):
        ids.update(e["id"] for e in _events(c))
    ids.update(d["_id"] for d in await _legacy_query(query, {"_id": 1}))
    return len(ids)

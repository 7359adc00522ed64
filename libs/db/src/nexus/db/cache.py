"""A read-through cache of documents by id, kept coherent by watching the driver's own writes.

core-api is the only writer of its collections, so every write passes through this process's
MongoDB client: a CommandListener sees each write command as it starts and again as it is answered
(a read between the two may be answered before the write lands). A write keyed by `_id` (an
update, delete or find-and-modify whose filter names the document's id, an insert of documents with
ids) makes only those documents' entries stale; any other write, every entry of its collection. A
cached listing is made stale by any write to its collection. A read that raced a write is not cached
(its generation changed while it ran). A TTL bounds staleness if core-api ever runs as several
processes."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import msgspec
from beanie import Document, SortDirection
from pymongo import monitoring

from nexus.domain.json_types import JsonObject

D = TypeVar("D", bound=Document)
T = TypeVar("T")
Sort = Sequence[tuple[str, int]]  # (field, 1 or -1); a SortDirection is one of those ints
_Store = dict[tuple[str, Any], tuple[Any, float, Any]]  # (collection, key) -> (generation, time, value)
_encode = msgspec.json.Encoder(order="sorted").encode
WRITES = frozenset({"insert", "update", "delete", "findAndModify", "findandmodify", "drop", "dropDatabase"})
# Where a write command lists what it writes, and where each item's filter is (None: the item is the document).
_ITEMS = {"update": ("updates", "q"), "delete": ("deletes", "q"), "insert": ("documents", None)}
MAX_KEYED = 200_000  # documents whose own generation is kept; past it, every entry is made stale


def _ids_of_filter(q: Any) -> list[Any] | None:
    """The ids a filter can match when it names them (`_id` equal, `$eq` or `$in`), else None."""
    if not isinstance(q, dict):
        return None
    v = q.get("_id")
    if isinstance(v, dict):
        if set(v) == {"$eq"}:
            return [v["$eq"]]
        if set(v) == {"$in"} and isinstance(v["$in"], list):
            return list(v["$in"])
        return None
    return None if v is None or isinstance(v, list) else [v]


def written_ids(name: str, command: Any) -> list[Any] | None:
    """The ids of the documents a write command can change, or None when it is not keyed by id."""
    if name in ("findAndModify", "findandmodify"):
        return _ids_of_filter(command.get("query"))
    where = _ITEMS.get(name)
    if where is None:
        return None
    field, at = where
    items = command.get(field)
    if not isinstance(items, list) or not items:
        return None
    ids: list[Any] = []
    for item in items:
        found = _ids_of_filter(item if at is None else item.get(at) if isinstance(item, dict) else None)
        if found is None:
            return None
        ids.extend(found)
    return ids


def _expire(store: _Store, older_than: float) -> None:
    """Drop entries from the oldest while they are past their TTL: an expired entry is never served,
    and kept it would only hold memory (every run's documents, until the cap)."""
    while store:
        key = next(iter(store))
        if store[key][1] >= older_than:
            return
        del store[key]


class ReadCache(monitoring.CommandListener):
    def __init__(self, ttl_s: float = 2.0, max_entries: int = 50_000, max_queries: int = 1_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_queries = max_queries  # list results are bigger and more varied than documents
        self.queries: _Store = {}
        self.generations: dict[str, int] = {}  # per collection, moved by every write: listings
        self.wide: dict[str, int] = {}  # per collection, moved by writes not keyed by id: documents
        self.keyed: dict[tuple[str, Any], int] = {}  # per document, moved by writes keyed by its id
        self.entries: _Store = {}
        self._reading: dict[tuple[tuple[str, Any], Any], asyncio.Future[Any]] = {}
        # Writes sent and not yet answered, by (connection, request): what their answer makes stale again.
        self._writing: dict[tuple[Any, int], tuple[str, list[Any] | None]] = {}
        self.hits = self.misses = self.shared = 0

    # -- monitoring.CommandListener
    # A write moves what it touches twice: when it is sent and when it is answered. A read that starts
    # between the two can be answered before the write is applied: it must not be kept as current (it
    # was, until the TTL: a PUT's answer, then a GET of the same document, showed the revision before it).
    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in WRITES:
            collection = event.command.get(event.command_name)
            if isinstance(collection, str):
                ns = f"{event.database_name}.{collection}"
                ids = written_ids(event.command_name, event.command)
                self._writing[(event.connection_id, event.request_id)] = (ns, ids)
                self._moved(ns, ids)
            else:  # dropDatabase and the like: forget everything
                self._forget_all()

    def _moved(self, ns: str, ids: list[Any] | None) -> None:
        self.generations[ns] = self.generations.get(ns, 0) + 1
        self._documents_written(ns, ids)

    def _forget_all(self) -> None:
        self.generations = {k: v + 1 for k, v in self.generations.items()}
        self.wide = {k: v + 1 for k, v in self.wide.items()}
        self.entries.clear()
        self.queries.clear()

    def _answered(self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent) -> None:
        if event.command_name in WRITES:
            written = self._writing.pop((event.connection_id, event.request_id), None)
            if written is not None:
                self._moved(*written)
            else:  # a write whose start this listener did not see as keyed: its whole store is stale
                self._forget_all()

    def _documents_written(self, ns: str, ids: list[Any] | None) -> None:
        if ids is not None and len(self.keyed) + len(ids) <= MAX_KEYED:
            try:
                for doc_id in ids:
                    key = (ns, doc_id)
                    self.keyed[key] = self.keyed.get(key, 0) + 1
                return
            except TypeError:  # an id that cannot be a key: the whole collection goes stale below
                pass
        if ids is not None:  # too many documents kept: start again, every entry stale (none may match a reset)
            self.keyed.clear()
            self.wide = {k: v + 1 for k, v in self.wide.items()}
        self.wide[ns] = self.wide.get(ns, 0) + 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._answered(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._answered(event)

    # -- reads
    async def get(self, doc_cls: type[D], doc_id: Any, *, keep_missing: bool = False) -> D | None:
        ns = doc_cls.get_pymongo_collection().full_name
        return await self._through(
            self.entries,
            self.max_entries,
            (ns, doc_id),
            lambda: (self.wide.get(ns, 0), self.keyed.get((ns, doc_id), 0)),
            lambda: doc_cls.get(doc_id),
            keep=lambda doc: keep_missing or doc is not None,
        )

    async def value(self, doc_cls: Any, doc_id: Any, load: Callable[[], Awaitable[T]], keep: Callable[[T], bool]) -> T:
        """What `load` reads of one document (a raw read of some of its fields), cached and made stale
        exactly as the document itself is."""
        ns = doc_cls.get_pymongo_collection().full_name
        return await self._through(
            self.entries,
            self.max_entries,
            (ns, ("value", doc_id)),
            lambda: (self.wide.get(ns, 0), self.keyed.get((ns, doc_id), 0)),
            load,
            keep=keep,
        )

    async def find(self, doc_cls: type[D], query: JsonObject, sort: Sort, limit: int) -> list[D]:
        """A find() with sort and limit, cached like a document: by collection and exact query, dropped
        by any write to the collection. A query that cannot be keyed goes to the database."""
        try:
            key = ("find", _encode((query, sort, limit)))
        except (TypeError, msgspec.EncodeError):
            return await doc_cls.find(query).sort(_directions(sort)).limit(limit).to_list()
        ns = doc_cls.get_pymongo_collection().full_name
        return await self._through(
            self.queries,
            self.max_queries,
            (ns, key),
            lambda: self.generations.get(ns, 0),
            lambda: doc_cls.find(query).sort(_directions(sort)).limit(limit).to_list(),
            keep=lambda docs: True,
        )

    async def _through(
        self,
        store: _Store,
        cap: int,
        key: tuple[str, Any],
        generation_of: Callable[[], Any],
        load: Callable[[], Awaitable[T]],
        keep: Callable[[T], bool],
    ) -> T:
        generation = generation_of()
        hit = store.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] == generation and now - hit[1] < self.ttl_s:
            self.hits += 1
            return cast(T, hit[2])  # what a load of this same key returned
        # Concurrent misses on one key share one read, if no write came between them:
        # otherwise every connection would queue its own read at each expiry.
        flight = (key, generation)
        pending = self._reading.get(flight)
        if pending is not None:
            self.shared += 1
            return cast(T, await asyncio.shield(pending))  # a load of this same key
        self.misses += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._reading[flight] = fut
        try:
            value = await load()
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: with no waiter it is not an unhandled error
            raise
        finally:
            del self._reading[flight]
        if keep(value) and generation_of() == generation:
            store.pop(key, None)  # re-inserted at the end: the store stays ordered by age
            _expire(store, now - self.ttl_s)
            if len(store) >= cap:
                store.clear()
            store[key] = (generation, now, value)
        fut.set_result(value)
        return value


_cache: ReadCache | None = None


def install(cache: ReadCache | None) -> None:
    global _cache
    _cache = cache


async def cached_get(doc_cls: type[D], doc_id: Any, *, keep_missing: bool = False) -> D | None:
    """Documents returned here are shared: read them, never mutate them. `keep_missing`: a document
    that does not exist is remembered as missing too, until a write to its collection (only for a
    collection this process alone writes, where absence is the common answer)."""
    if _cache is None:
        return await doc_cls.get(doc_id)
    return await _cache.get(doc_cls, doc_id, keep_missing=keep_missing)


async def cached_value(doc_cls: Any, doc_id: Any, load: Callable[[], Awaitable[T]], keep: Callable[[T], bool]) -> T:
    """What `load` reads of the document `doc_id` of `doc_cls`'s collection, shared like cached_get's
    documents: read it, never mutate it. Kept only when `keep` says so."""
    if _cache is None:
        return await load()
    return await _cache.value(doc_cls, doc_id, load, keep)


async def cached_find(doc_cls: type[D], query: JsonObject, sort: Sort, limit: int) -> list[D]:
    """Documents returned here are shared: read them, never mutate them."""
    if _cache is None:
        return await doc_cls.find(query).sort(_directions(sort)).limit(limit).to_list()
    return await _cache.find(doc_cls, query, sort, limit)


def _directions(sort: Sort) -> list[tuple[str, SortDirection]]:
    return [(field, SortDirection(direction)) for field, direction in sort]

"""A read-through cache of documents by id, kept coherent by watching the driver's own writes.

core-api is the only writer of its collections, so every write passes through this process's
MongoDB client: a CommandListener bumps the collection's generation when a write command starts,
which makes every cached entry of that collection stale at once. A read that raced a write is
not cached (its generation changed while it ran). A TTL bounds staleness if core-api ever runs
as several processes."""

import time
from typing import Any, TypeVar

from pymongo import monitoring

D = TypeVar("D")
WRITES = frozenset({"insert", "update", "delete", "findAndModify", "findandmodify", "drop", "dropDatabase"})


class ReadCache(monitoring.CommandListener):
    def __init__(self, ttl_s: float = 2.0, max_entries: int = 50_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.generations: dict[str, int] = {}
        self.entries: dict[tuple[str, Any], tuple[int, float, Any]] = {}
        self.hits = self.misses = 0

    # -- monitoring.CommandListener
    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in WRITES:
            collection = event.command.get(event.command_name)
            if isinstance(collection, str):
                ns = f"{event.database_name}.{collection}"
                self.generations[ns] = self.generations.get(ns, 0) + 1
            else:  # dropDatabase and the like: forget everything
                self.generations = {k: v + 1 for k, v in self.generations.items()}
                self.entries.clear()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    # -- reads
    async def get(self, doc_cls: type[D], doc_id: Any) -> D | None:
        collection = doc_cls.get_pymongo_collection().full_name  # type: ignore[attr-defined]
        generation = self.generations.get(collection, 0)
        key = (collection, doc_id)
        hit = self.entries.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] == generation and now - hit[1] < self.ttl_s:
            self.hits += 1
            return hit[2]
        self.misses += 1
        doc = await doc_cls.get(doc_id)  # type: ignore[attr-defined]
        if doc is not None and self.generations.get(collection, 0) == generation:
            if len(self.entries) >= self.max_entries:
                self.entries.clear()
            self.entries[key] = (generation, now, doc)
        return doc


_cache: ReadCache | None = None


def install(cache: ReadCache | None) -> None:
    global _cache
    _cache = cache


async def cached_get(doc_cls: type[D], doc_id: Any) -> D | None:
    """Documents returned here are shared: read them, never mutate them."""
    if _cache is None:
        return await doc_cls.get(doc_id)  # type: ignore[attr-defined]
    return await _cache.get(doc_cls, doc_id)

"""Newest-first list pages that cost the same with 100 documents or 1,000,000.

FerretDB v1 pushes only equality filters down to its storage; sorts, ranges and limits are done in
its own process over every document the filter lets through. So "the newest 50 runs" would read
every run. Instead each paged document carries `page`: the number of a bucket of BUCKET consecutive
inserts (core-api, the only writer, takes a block of BUCKET numbers at a time from a counter
document). A newest-first page reads the newest bucket by equality (an index lookup), then the one
before, until the page is full. Filters that match little (a bucket walk of a few buckets finds
too few) fall back to the plain query, which the equality filter keeps small.

On MongoDB, which sorts with its indexes, pages are read the plain way; `page` is still written."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from beanie import Document, Insert, before_event
from pymongo import ReturnDocument

from nexus.domain.json_types import JsonObject

BUCKET = 32
MAX_WALK = 16  # buckets a filtered page may read (one pushed-down equality each) before the plain read
P = TypeVar("P", bound="PagedDocument")
COUNTERS = "page_counters"


class PagedDocument(Document):
    page: int | None = None  # the insert bucket (see nexus.db.paging); None: written before buckets existed

    @before_event(Insert)
    async def _take_page(self) -> None:
        if self.page is None:
            self.page = await allocate(type(self))


class _Block:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.page = 0
        self.used = BUCKET


_blocks: dict[str, _Block] = {}


def _counters(doc_cls: Any) -> Any:
    return doc_cls.get_pymongo_collection().database[COUNTERS]


async def allocate(doc_cls: Any) -> int:
    """The bucket for the next insert into doc_cls's collection."""
    name = doc_cls.get_pymongo_collection().full_name
    block = _blocks.get(name)
    if block is None:
        block = _blocks[name] = _Block()
    async with block.lock:
        if block.used >= BUCKET:
            counter = await _counters(doc_cls).find_one_and_update(
                {"_id": doc_cls.get_pymongo_collection().name},
                {"$inc": {"n": 1}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            block.page, block.used = counter["n"], 0
        block.used += 1
        return block.page


async def reserve(collection: Any, buckets: int) -> int:
    """Take `buckets` bucket numbers at once for a bulk load into `collection` (a pymongo collection);
    returns the first. Call it while no core-api writes to the collection."""
    counter = await collection.database[COUNTERS].find_one_and_update(
        {"_id": collection.name},
        {"$inc": {"n": buckets}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    return cast(int, counter["n"]) - buckets + 1  # the counter only ever has ints added ($inc)


def held(doc_cls: Any, page: int) -> int:
    """How many documents bucket `page` holds as far as this process knows: fewer than BUCKET only for
    the block it is filling (core-api is the only writer)."""
    block = _blocks.get(doc_cls.get_pymongo_collection().full_name) if doc_cls is not None else None
    return block.used if block is not None and block.page == page else BUCKET


async def newest_page(doc_cls: Any) -> int:
    counter = await _counters(doc_cls).find_one({"_id": doc_cls.get_pymongo_collection().name})
    return int(counter["n"]) if counter else 0


_native: dict[int, bool] = {}


async def sorts_natively(doc_cls: Any) -> bool:
    """MongoDB uses its indexes for sort and range; FerretDB v1 does not (it names itself in buildInfo)."""
    client = doc_cls.get_pymongo_collection().database.client
    known = _native.get(id(client))
    if known is None:
        info = await client.admin.command("buildInfo")
        known = _native[id(client)] = "ferretdbVersion" not in info
    return known


async def bucket_walk(
    doc_cls: type[P],
    filters: JsonObject,
    limit: int,
    cursor_page: int | None,
    cursor: str | None,
    find: Callable[[JsonObject, int], Awaitable[list[P]]],
) -> list[P] | None:
    """Up to limit+1 documents newest first, read bucket by bucket; None when a short walk did not
    fill the page (the caller then asks the plain way). `find(query, limit)` reads one bucket.

    The buckets a page still needs are read together (as many as the matches found so far say, within
    the walk), each a round trip of its own; they are taken in order, so the page is the one a
    bucket-by-bucket walk gives."""
    start = cursor_page + 1 if cursor_page is not None else await newest_page(doc_cls)
    walk = 3 + limit // BUCKET
    longest = max(walk, MAX_WALK)
    # The filters are pushed down with the bucket: the storage returns only the bucket's matches
    # (a FerretDB document costs about a millisecond to hand over, the filter's index lookup much
    # less; PostgreSQL checks a common value, such as status=succeeded, on the bucket's rows alone).
    within = dict(filters)
    reads: dict[int, asyncio.Future[list[P]]] = {}
    found: list[P] = []
    filled = held(doc_cls, start)  # the first bucket may be the newest, part-filled: its rate counts for less

    def read(first: int) -> None:
        """Start the reads of bucket `first` and of those below it the page should need."""
        walked = start - first
        # Buckets to the end of the walk (and the first bucket); once matches were found, to the end of
        # the longest walk: the walk goes on as far as their rate says, and so do these reads.
        left = min(first, first - (start - (longest if found else walk)))
        if walked == 0:
            ahead = 1
        elif found:  # as many buckets as the rate of matches per document read says
            ahead = -(-(limit + 1 - len(found)) * ((walked - 1) * BUCKET + filled) // (len(found) * BUCKET))
        else:
            ahead = left
        for p in range(first, first - max(1, min(ahead, left)), -1):
            query = {**within, "page": p}
            if cursor:
                query["_id"] = {"$lt": cursor}
            reads[p] = asyncio.ensure_future(find(query, limit + 1))

    try:
        page = start
        while page >= 1 and page > start - walk:
            if page not in reads:
                read(page)
            found.extend(await reads.pop(page))
            if len(found) > limit:
                found.sort(key=lambda d: cast(str, d.id), reverse=True)  # paged documents key on their own str ids
                return found[: limit + 1]
            page -= 1
            walked = start - page
            if walked == walk and found and walk < longest:
                # A middling filter (status=failed): as many more buckets as the rate so far says the page
                # needs, within MAX_WALK; the plain read would sort every match of the whole history.
                walk = min(longest, walked + -(-(limit + 1 - len(found)) * walked // len(found)) + 1)
        return None
    finally:
        if reads:  # read ahead and not needed: let them end (a cancelled read would drop its connection)
            await asyncio.gather(*reads.values(), return_exceptions=True)

"""Cursor pagination over ULID-suffixed ids: the cursor is the last id seen; ids sort by creation.

On FerretDB, collections of paged documents (runs, tasks, audit…) are read bucket by bucket
(nexus.db.paging) so a page costs the same however long the history; elsewhere by sort and limit."""

from typing import Annotated, Any, Generic, TypeVar, cast

import msgspec
from litestar.params import Parameter

from nexus.db.cache import cached_find, cached_get
from nexus.db.paging import PagedDocument, bucket_walk, sorts_natively
from nexus.domain.json_types import JsonObject

T = TypeVar("T")

Limit = Annotated[int, Parameter(ge=1, le=500, description="Page size")]
Cursor = Annotated[str | None, Parameter(description="The `next_cursor` of the previous page", max_length=200)]
# A list's filter by one value (an id, a name, a status word): an id is never longer.
Filter = Annotated[str | None, Parameter(max_length=200)]


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


# Filters one value of which matches a handful of documents (a task's runs, a run's approvals): the
# plain read, which their index answers, costs less than walking buckets that hold none of them.
FEW = frozenset({"task_id", "run_id"})


async def page_of(
    doc_cls: Any, filters: JsonObject, limit: int, cursor: str | None, *, newest_first: bool = True, cache: bool = True
) -> tuple[list[Any], str | None]:
    """One page, read through the coherent read cache (libs/db/cache.py): the documents are shared.
    `cache=False` for a query that names the current time (it would never be asked twice)."""
    if (
        newest_first
        and issubclass(doc_cls, PagedDocument)
        and not filters.keys() & FEW
        and not await sorts_natively(doc_cls)
    ):
        docs = await _by_buckets(doc_cls, filters, limit, cursor, cache)
        if docs is not None:
            more = len(docs) > limit
            docs = docs[:limit]
            return docs, (docs[-1].id if more and docs else None)
    query = dict(filters)
    if cursor:
        query["_id"] = {"$lt": cursor} if newest_first else {"$gt": cursor}
    sort = [("_id", -1 if newest_first else 1)]
    if cache:
        docs = await cached_find(doc_cls, query, sort, limit + 1)
    else:
        docs = await doc_cls.find(query).sort(sort).limit(limit + 1).to_list()
    more = len(docs) > limit
    docs = docs[:limit]
    return docs, (docs[-1].id if more and docs else None)


async def _by_buckets(
    doc_cls: Any, filters: JsonObject, limit: int, cursor: str | None, cache: bool
) -> list[Any] | None:
    cursor_page = None
    if cursor:
        anchor = await cached_get(doc_cls, cursor)
        if anchor is None or anchor.page is None:
            return None
        cursor_page = anchor.page

    async def find(query: JsonObject, n: int) -> list[Any]:
        sort = [("_id", -1)]
        if cache:
            return await cached_find(doc_cls, query, sort, n)
        return cast(list[Any], await doc_cls.find(query).sort(sort).limit(n).to_list())  # beanie's to_list

    return await bucket_walk(doc_cls, filters, limit, cursor_page, cursor, find)

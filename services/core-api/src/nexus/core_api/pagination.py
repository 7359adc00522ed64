"""Cursor pagination over ULID-suffixed ids: ids sort by creation, and a page starts after the last id seen.

A cursor is that id and a digest binding it to the list that issued it (the collection, the order and the
filters): `<id>.<digest>`. A cursor the server never issued — garbage, a bare id, one taken from another
list or another filter set — is a 422 naming `cursor`, not an empty or a wrong page. The digest is not a
signature (its recipe is in this file): a forged cursor is only a position in the same filtered list.

On FerretDB, collections of paged documents (runs, tasks, audit…) are read bucket by bucket
(nexus.db.paging) so a page costs the same however long the history; elsewhere by sort and limit."""

import base64
import hashlib
import json
from typing import Annotated, Any, Generic, TypeVar, cast

import msgspec
from litestar.params import Parameter

from nexus.core_api.errors import DomainError
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
    docs, more = await _page(
        doc_cls, filters, limit, _position(cursor, doc_cls, filters, newest_first), newest_first, cache
    )
    return docs, (_issued(doc_cls, filters, docs[-1].id, newest_first) if more and docs else None)


def _digest(doc_cls: Any, filters: JsonObject, last_id: str, newest_first: bool) -> str:
    # A value that is not plain JSON (a query's `now()`) counts by its type: it differs page to page.
    listed = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=lambda v: type(v).__name__)
    raw = "\0".join((doc_cls.__name__, "desc" if newest_first else "asc", listed, last_id)).encode()
    return base64.urlsafe_b64encode(hashlib.blake2b(raw, digest_size=9, person=b"nexus-cursor").digest()).decode()


def _issued(doc_cls: Any, filters: JsonObject, last_id: str, newest_first: bool = True) -> str:
    return f"{last_id}.{_digest(doc_cls, filters, last_id, newest_first)}"


def _position(cursor: str | None, doc_cls: Any, filters: JsonObject, newest_first: bool) -> str | None:
    """The last id the page starts after; a cursor this list did not issue is refused by name."""
    if not cursor:  # `?cursor=` as none: the first page
        return None
    last_id, _, digest = cursor.rpartition(".")
    if not last_id or digest != _digest(doc_cls, filters, last_id, newest_first):
        raise DomainError(
            422,
            "cursor: not a cursor this list issued (with these filters); pass the `next_cursor` of the previous "
            "page, or none for the first page",
            field="cursor",
        )
    return last_id


async def _page(
    doc_cls: Any, filters: JsonObject, limit: int, cursor: str | None, newest_first: bool, cache: bool
) -> tuple[list[Any], bool]:
    """Up to `limit` documents after the id `cursor`, and whether more follow."""
    if (
        newest_first
        and issubclass(doc_cls, PagedDocument)
        and not filters.keys() & FEW
        and not await sorts_natively(doc_cls)
    ):
        docs = await _by_buckets(doc_cls, filters, limit, cursor, cache)
        if docs is not None:
            return docs[:limit], len(docs) > limit
    query = dict(filters)
    if cursor:
        query["_id"] = {"$lt": cursor} if newest_first else {"$gt": cursor}
    sort = [("_id", -1 if newest_first else 1)]
    if cache:
        docs = await cached_find(doc_cls, query, sort, limit + 1)
    else:
        docs = await doc_cls.find(query).sort(sort).limit(limit + 1).to_list()
    return docs[:limit], len(docs) > limit


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

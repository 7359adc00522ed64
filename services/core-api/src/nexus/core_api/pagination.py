"""Cursor pagination over ULID-suffixed ids: the cursor is the last id seen; ids sort by creation."""

from typing import Annotated, Any, Generic, TypeVar

import msgspec
from litestar.params import Parameter

T = TypeVar("T")

Limit = Annotated[int, Parameter(ge=1, le=500, description="Page size")]
Cursor = Annotated[str | None, Parameter(description="The `next_cursor` of the previous page", max_length=200)]


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


async def page_of(doc_cls: Any, filters: dict, limit: int, cursor: str | None, *, newest_first: bool = True) -> tuple[list, str | None]:
    query = dict(filters)
    if cursor:
        query["_id"] = {"$lt": cursor} if newest_first else {"$gt": cursor}
    docs = await doc_cls.find(query).sort([("_id", -1 if newest_first else 1)]).limit(limit + 1).to_list()
    more = len(docs) > limit
    docs = docs[:limit]
    return docs, (docs[-1].id if more and docs else None)

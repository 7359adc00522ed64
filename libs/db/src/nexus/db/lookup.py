"""Reads that stay index lookups on FerretDB v1."""

from collections.abc import Iterable
from typing import Any, TypeVar

from beanie import Document

from nexus.domain.json_types import JsonObject

D = TypeVar("D", bound=Document)


async def find_each(doc_cls: type[D], field: str, values: Iterable[Any], extra: JsonObject | None = None) -> list[D]:
    """`find({field: {"$in": values}, **extra})` as one equality query per value. FerretDB v1 pushes an
    equality down to storage, where an index answers it, but filters `$in` itself over every
    document of the collection. Same documents on MongoDB."""
    out: list[D] = []
    for value in dict.fromkeys(values):
        out.extend(await doc_cls.find({**(extra or {}), field: value}).to_list())
    return out

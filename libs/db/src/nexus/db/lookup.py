"""Reads that stay index lookups on FerretDB v1."""

from collections.abc import Iterable
from typing import Any


async def find_each(doc_cls: Any, field: str, values: Iterable[Any], extra: dict | None = None) -> list:
    """`find({field: {"$in": values}, **extra})` as one equality query per value. FerretDB v1 pushes an
    equality down to storage, where an index answers it, but filters `$in` itself over every
    document of the collection. Same documents on MongoDB."""
    out: list = []
    for value in dict.fromkeys(values):
        out.extend(await doc_cls.find({**(extra or {}), field: value}).to_list())
    return out

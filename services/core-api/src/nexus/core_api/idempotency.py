"""Idempotency keys for creates: `POST /v1/tasks` and `POST /v1/goals` with an `Idempotency-Key`
header make one task or goal however often they are asked. The id of what is created is chosen and
stored with the key before anything else, so a request asked again — its answer lost, its core-api
killed mid-request, or still under way — finds that id: the thing itself when it is stored, else it is
created now under that id (two at once: one insert wins, the other reads it). The same key with
another body is refused (422 naming the header). Keys are the caller's own (scoped to its API key) and
kept for `KEEP_S`; a request without the header works as before and costs nothing more."""

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

import msgspec
from litestar.params import HeaderParameter
from pymongo.errors import DuplicateKeyError

from nexus.core_api.errors import DomainError
from nexus.db.documents import IdempotencyKey, now
from nexus.domain.ids import new_id

KEEP_S = 24 * 3600
HEADER = "Idempotency-Key"

IdemKey = Annotated[
    str | None,
    HeaderParameter(
        name=HEADER.lower(),
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="make this create once: the same key and body asked again answer with what the first made",
    ),
]


@dataclass(frozen=True)
class Claim:
    resource_id: str
    first: bool  # this request is the first to use the key (nothing can be stored under the id yet)


def _hex(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


async def claim(caller: str, what: str, key: str, body: msgspec.Struct, prefix: str) -> Claim:
    """The id the request's create goes under, and whether an earlier request with this key came first."""
    doc = IdempotencyKey(id=_hex(caller, what, key), digest=_hex(msgspec.json.encode(body)), resource_id=new_id(prefix))
    try:
        await doc.insert()
        return Claim(doc.resource_id, first=True)
    except DuplicateKeyError:
        stored = await IdempotencyKey.get(doc.id)
    if stored is None:  # forgotten between the two (older than KEEP_S): this request is a new one
        return await claim(caller, what, key, body, prefix)
    if stored.digest != doc.digest:
        raise DomainError(
            422, f"this {HEADER} was used with another request: a retry must send the same body", field=HEADER
        )
    return Claim(stored.resource_id, first=False)


async def forget_old() -> int:
    """Keys older than `KEEP_S` are dropped (a retry that late is a new request)."""
    res = await IdempotencyKey.get_pymongo_collection().delete_many(
        {"created_at": {"$lt": now() - timedelta(seconds=KEEP_S)}}
    )
    return res.deleted_count

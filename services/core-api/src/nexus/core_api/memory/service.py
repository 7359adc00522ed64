"""Memory items: what agents know beyond their prompt, scoped to an agent, a repository, or everyone."""

from datetime import datetime, timedelta

from nexus.core_api.errors import DomainError, not_found
from nexus.core_api.named import named_id
from nexus.core_api.memory.schemas import MemoryCreate, MemoryOut, MemoryUpdate
from nexus.core_api.schemas import iso
from nexus.db.documents import Agent, MemoryItem, Repository, now
from nexus.db.writes import update_document
from nexus.domain.ids import new_id
from nexus.domain.json_types import JsonObject


def to_out(m: MemoryItem) -> MemoryOut:
    return MemoryOut(
        id=m.id,
        scope=m.scope,
        scope_id=m.scope_id,
        content=m.content,
        tags=m.tags,
        source=m.source,
        expires_at=iso(m.expires_at),
        created_at=iso(m.created_at),
    )


async def get(item_id: str) -> MemoryItem:
    doc = await MemoryItem.get(item_id)
    if doc is None:
        raise not_found("memory item", item_id)
    return doc


async def _scope_id(scope: str, ref: str | None) -> str | None:
    if scope == "global":
        if ref:
            raise DomainError(422, "a global memory item has no scope_id", field="scope_id")
        return None
    if not ref:
        article = "an" if scope == "agent" else "a"
        raise DomainError(422, f"{article} {scope} memory item needs the {scope}'s id or name", field="scope_id")
    return await named_id(Agent if scope == "agent" else Repository, ref, kind=scope, field="scope_id")


def _expiry(ttl_s: int | None) -> datetime | None:
    return now() + timedelta(seconds=ttl_s) if ttl_s else None


async def create(data: MemoryCreate) -> MemoryItem:
    doc = MemoryItem(
        id=new_id("mem"),
        scope=data.scope,
        scope_id=await _scope_id(data.scope, data.scope_id),
        content=data.content,
        tags=sorted(set(data.tags)),
        source=data.source,
        expires_at=_expiry(data.ttl_s),
    )
    await doc.insert()
    return doc


async def update(item_id: str, data: MemoryUpdate) -> tuple[MemoryItem, bool]:
    doc = await get(item_id)
    fields: JsonObject = {}
    if data.content is not None and data.content != doc.content:
        fields["content"] = data.content
    if data.tags is not None and sorted(set(data.tags)) != doc.tags:
        fields["tags"] = sorted(set(data.tags))
    if data.source is not None and data.source != doc.source:
        fields["source"] = data.source
    if data.ttl_s is not None:
        fields["expires_at"] = _expiry(data.ttl_s)
    if not fields:
        return doc, False
    await update_document(MemoryItem, doc.id, {"$set": fields})
    return await get(doc.id), True


async def delete(item_id: str) -> MemoryItem:
    doc = await get(item_id)
    await MemoryItem.get_pymongo_collection().delete_one({"_id": doc.id})
    return doc

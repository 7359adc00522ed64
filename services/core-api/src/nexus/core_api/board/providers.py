"""Which external board a repository's tasks are projected to, set by an admin. Credentials are
secret references (names); their values are resolved where they are used, never stored here."""

from typing import Any

import msgspec

from nexus.core_api.board.schemas import BoardProviderIn, BoardProviderOut, JiraSettings, PlaneSettings
from nexus.core_api.errors import DomainError, not_found
from nexus.core_api.named import named_id
from nexus.core_api.schemas import iso
from nexus.db.documents import Repository, Task, now
from nexus.domain.json_types import JsonObject

PROVIDERS = "board_providers"  # {_id: "default" | repository id, provider, plane, jira, updated_by, updated_at}


def _coll() -> Any:
    return Task.get_pymongo_collection().database[PROVIDERS]


async def _scope(ref: str) -> str:
    if ref == "default":
        return ref
    return await named_id(Repository, ref, kind="repository", field="scope")


def _out(doc: JsonObject) -> BoardProviderOut:
    return BoardProviderOut(
        scope=doc["_id"],
        provider=doc["provider"],
        plane=msgspec.convert(doc["plane"], PlaneSettings) if doc.get("plane") else None,
        jira=msgspec.convert(doc["jira"], JiraSettings) if doc.get("jira") else None,
        updated_by=doc.get("updated_by", ""),
        updated_at=iso(doc.get("updated_at")) or "",
    )


async def put(ref: str, data: BoardProviderIn, actor: str) -> BoardProviderOut:
    if data.provider != "internal" and getattr(data, data.provider) is None:
        raise DomainError(422, f"provider {data.provider} needs its `{data.provider}` settings", field=data.provider)
    scope = await _scope(ref)
    doc = {
        "provider": data.provider,
        "plane": msgspec.to_builtins(data.plane) if data.plane else None,
        "jira": msgspec.to_builtins(data.jira) if data.jira else None,
        "updated_by": actor,
        "updated_at": now(),
    }
    await _coll().update_one({"_id": scope}, {"$set": doc}, upsert=True)
    return _out({"_id": scope, **doc})


async def get(ref: str) -> BoardProviderOut:
    doc = await _coll().find_one({"_id": await _scope(ref)})
    if doc is None:
        raise not_found("board provider", ref)
    return _out(doc)


async def list_all() -> list[BoardProviderOut]:
    return [_out(d) async for d in _coll().find({})]


async def delete(ref: str) -> None:
    res = await _coll().delete_one({"_id": await _scope(ref)})
    if not res.deleted_count:
        raise not_found("board provider", ref)


async def webhook_secrets(provider: str) -> list[str]:
    """The secret references of every configured board of this kind that accepts webhooks."""
    return [
        d[provider]["webhook_secret"]
        async for d in _coll().find({"provider": provider})
        if (d.get(provider) or {}).get("webhook_secret")
    ]

"""`board_links`: board-sync's own collection, one document per task linking it to its item on an
external board, with what board-sync last wrote there (to tell its own echoes from real edits)."""

from datetime import UTC, datetime
from typing import Any

import msgspec

from nexus.domain.json_types import JsonObject


class BoardLink(msgspec.Struct, kw_only=True):
    task_id: str
    provider: str
    scope: str  # the provider settings used: "default" or a repository id
    item_id: str
    item_key: str = ""
    group: str = ""  # the state group board-sync last set
    title: str = ""
    description: str = ""
    commented_runs: list[str] = msgspec.field(default_factory=list)
    # The URLs linked on the item; None: stored before links were remembered (they went with their comment).
    linked: list[str] | None = None


class LinkStore:
    def __init__(self, collection: Any) -> None:
        self.coll = collection

    async def ensure_indexes(self) -> None:
        await self.coll.create_index([("provider", 1), ("item_id", 1)])

    @staticmethod
    def _from(doc: JsonObject | None) -> BoardLink | None:
        if doc is None:
            return None
        fields = {k: v for k, v in doc.items() if k in BoardLink.__struct_fields__}
        return msgspec.convert({**fields, "task_id": doc["_id"]}, BoardLink)

    async def get(self, task_id: str) -> BoardLink | None:
        return self._from(await self.coll.find_one({"_id": task_id}))

    async def by_item(self, provider: str, item_id: str) -> BoardLink | None:
        return self._from(await self.coll.find_one({"provider": provider, "item_id": item_id}))

    async def all(self) -> list[BoardLink]:
        return [link async for doc in self.coll.find({}) if (link := self._from(doc))]

    async def save(self, link: BoardLink) -> None:
        doc = msgspec.to_builtins(link)
        task_id = doc.pop("task_id")
        await self.coll.update_one({"_id": task_id}, {"$set": {**doc, "updated_at": datetime.now(UTC)}}, upsert=True)

    async def delete(self, task_id: str) -> None:
        await self.coll.delete_one({"_id": task_id})

"""Plane: work items of one project over its REST API (`X-API-Key`), states mapped by group,
cursor pagination, the task id as the item's external id (source "nexus")."""

import html
import re
from typing import Any

import httpx

from nexus.board_sync.providers.base import (
    MARKER_SOURCE,
    Card,
    Comment,
    ExternalItem,
    Fields,
    NotFound,
    ProviderError,
    group_of,
    same_comment,
)
from nexus.board_sync.providers.http import HttpBoard, RateLimiter
from nexus.domain.json_types import JsonObject

_P = re.compile(r"^<p>(.*)</p>$", re.S)


def to_html(text: str) -> str:
    return f"<p>{html.escape(text)}</p>" if text else ""


def from_html(value: str | None) -> str:
    if not value:
        return ""
    m = _P.match(value)
    return html.unescape(m.group(1)) if m else value


class PlaneProvider(HttpBoard):
    name = "plane"

    def __init__(
        self,
        base_url: str,
        workspace: str,
        project_id: str,
        api_key: str,
        limiter: RateLimiter,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **retry: Any,
    ) -> None:
        client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers={"X-API-Key": api_key}, timeout=15.0, transport=transport
        )
        super().__init__(client, limiter, **retry)
        self.project = f"/api/v1/workspaces/{workspace}/projects/{project_id}"
        self._state_ids: dict[str, str] = {}  # group -> state id
        self._groups: dict[str, str] = {}  # state id -> group

    async def _pages(self, path: str, **params: Any) -> list[JsonObject]:
        """Every result of a cursor-paginated list."""
        out: list[JsonObject] = []
        cursor: str | None = None
        while True:
            body = await self.call(
                "GET", path, params={**params, "per_page": 100, **({"cursor": cursor} if cursor else {})}
            )
            if isinstance(body, list):
                return out + body
            out += body.get("results", [])
            if not body.get("next_page_results") or not body.get("next_cursor"):
                return out
            cursor = body["next_cursor"]

    async def _states(self) -> None:
        if self._state_ids:
            return
        for s in await self._pages(f"{self.project}/states/"):
            self._groups[s["id"]] = s["group"]
            # the first state of a group (Plane orders them by sequence) is where a card goes
            self._state_ids.setdefault(s["group"], s["id"])

    async def _state_for(self, group: str) -> str:
        await self._states()
        if group not in self._state_ids:
            raise ProviderError(f"plane: the project has no state in group {group!r}")
        return self._state_ids[group]

    async def _item(self, body: JsonObject) -> ExternalItem:
        await self._states()
        return ExternalItem(
            id=body["id"],
            external_id=body.get("external_id") or "",
            title=body.get("name", ""),
            description=from_html(body.get("description_html")),
            group=self._groups.get(body.get("state") or "", "backlog"),
            key=str(body.get("sequence_id") or ""),
            assignee=(body.get("assignees") or [None])[0],
            labels=list(body.get("labels") or []),
        )

    async def create_item(self, card: Card) -> ExternalItem:
        body = await self.call(
            "POST",
            f"{self.project}/work-items/",
            once=True,
            json={
                "name": card.title,
                "description_html": to_html(card.description),
                "state": await self._state_for(group_of(card.status)),
                "external_id": card.task_id,
                "external_source": MARKER_SOURCE,
                "assignees": [card.assignee] if card.assignee else [],
                "labels": card.labels,
            },
        )
        return await self._item(body)

    async def find_by_external_id(self, task_id: str) -> ExternalItem | None:
        try:
            body = await self.call(
                "GET", f"{self.project}/work-items/", params={"external_id": task_id, "external_source": MARKER_SOURCE}
            )
        except NotFound:
            return None
        if isinstance(body, dict) and "results" in body:  # a list answer: pick ours
            body = next((r for r in body["results"] if r.get("external_id") == task_id), None)
        return await self._item(body) if body else None

    async def get_item(self, item_id: str) -> ExternalItem:
        return await self._item(await self.call("GET", f"{self.project}/work-items/{item_id}/"))

    async def update_status(self, item_id: str, group: str) -> None:
        await self.call("PATCH", f"{self.project}/work-items/{item_id}/", json={"state": await self._state_for(group)})

    async def update_fields(self, item_id: str, fields: Fields) -> None:
        patch: dict[str, Any] = {}
        if fields.title is not None:
            patch["name"] = fields.title
        if fields.description is not None:
            patch["description_html"] = to_html(fields.description)
        if fields.assignee is not None:
            patch["assignees"] = [fields.assignee]
        if fields.labels is not None:
            patch["labels"] = fields.labels
        if patch:
            await self.call("PATCH", f"{self.project}/work-items/{item_id}/", json=patch)

    async def add_comment(self, item_id: str, text: str) -> Comment:
        async def send() -> Comment:
            path = f"{self.project}/work-items/{item_id}/comments/"
            body = await self.call("POST", path, once=True, json={"comment_html": to_html(text)})
            return Comment(id=body["id"], text=from_html(body.get("comment_html")))

        async def made() -> Comment | None:
            return same_comment(await self.list_comments(item_id), text)

        return await self.made_once(send, made)

    async def list_comments(self, item_id: str) -> list[Comment]:
        rows = await self._pages(f"{self.project}/work-items/{item_id}/comments/")
        return [Comment(id=r["id"], text=from_html(r.get("comment_html"))) for r in rows]

    async def link(self, item_id: str, title: str, url: str) -> None:
        path = f"{self.project}/work-items/{item_id}/links/"

        async def send() -> bool:
            try:
                await self.call("POST", path, once=True, json={"title": title, "url": url})
            except ProviderError as exc:  # linked already: by a board-sync that died before it recorded so
                if "already exists" not in str(exc):
                    raise
            return True

        async def made() -> bool | None:
            return any(lk.get("url") == url for lk in await self._pages(path)) or None

        await self.made_once(send, made)

"""Jira Cloud: issues over REST v3 (basic auth with an API token), moved by the transitions the
issue's workflow offers, descriptions and comments in ADF, the task id as a label marker."""

from typing import Any

import httpx

from nexus.board_sync.providers.base import (
    MARKER_SOURCE,
    Card,
    Comment,
    ExternalItem,
    Fields,
    ProviderError,
    group_of,
    same_comment,
)
from nexus.board_sync.providers.http import HttpBoard, RateLimiter
from nexus.domain.json_types import JsonObject

# The status each group lands in, by name; a workflow may rename them in the provider config.
DEFAULT_STATUS_NAMES = {
    "backlog": "Backlog",
    "unstarted": "To Do",
    "started": "In Progress",
    "completed": "Done",
    "cancelled": "Cancelled",
}
_CATEGORY_GROUP = {"new": "unstarted", "indeterminate": "started", "done": "completed"}


def adf(text: str) -> JsonObject | None:
    if not text:
        return None
    paragraphs = [
        {"type": "paragraph", "content": [{"type": "text", "text": line}] if line else []} for line in text.split("\n")
    ]
    return {"type": "doc", "version": 1, "content": paragraphs}


def adf_text(doc: JsonObject | None) -> str:
    if not doc:
        return ""
    lines = []
    for block in doc.get("content", []):
        lines.append("".join(n.get("text", "") for n in block.get("content", []) if n.get("type") == "text"))
    return "\n".join(lines)


def marker(task_id: str) -> str:
    return f"{MARKER_SOURCE}-{task_id}"


class JiraProvider(HttpBoard):
    name = "jira"

    def __init__(
        self,
        base_url: str,
        project_key: str,
        email: str,
        api_token: str,
        limiter: RateLimiter,
        *,
        status_names: dict[str, str] | None = None,
        issue_type: str = "Task",
        transport: httpx.AsyncBaseTransport | None = None,
        **retry: Any,
    ) -> None:
        client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), auth=(email, api_token), timeout=15.0, transport=transport
        )
        super().__init__(client, limiter, **retry)
        self.project_key = project_key
        self.issue_type = issue_type
        self.status_names = {**DEFAULT_STATUS_NAMES, **(status_names or {})}
        self._group_by_name = {v.lower(): k for k, v in self.status_names.items()}

    def _item(self, body: JsonObject) -> ExternalItem:
        f = body.get("fields", {})
        status = f.get("status") or {}
        group = self._group_by_name.get(str(status.get("name", "")).lower()) or _CATEGORY_GROUP.get(
            (status.get("statusCategory") or {}).get("key", ""), "backlog"
        )
        labels = list(f.get("labels") or [])
        ext = next((lb[len(MARKER_SOURCE) + 1 :] for lb in labels if lb.startswith(MARKER_SOURCE + "-")), "")
        return ExternalItem(
            id=body["key"],
            key=body["key"],
            external_id=ext,
            title=f.get("summary", ""),
            description=adf_text(f.get("description")),
            group=group,
            assignee=(f.get("assignee") or {}).get("accountId"),
            labels=[lb for lb in labels if lb != marker(ext)],
        )

    async def create_item(self, card: Card) -> ExternalItem:
        fields: dict[str, Any] = {
            "project": {"key": self.project_key},
            "summary": card.title,
            "issuetype": {"name": self.issue_type},
            "labels": [marker(card.task_id), *card.labels],
        }
        if card.description:
            fields["description"] = adf(card.description)
        if card.assignee:
            fields["assignee"] = {"accountId": card.assignee}
        created = await self.call("POST", "/rest/api/3/issue", once=True, json={"fields": fields})
        await self.update_status(created["key"], group_of(card.status))
        return await self.get_item(created["key"])

    async def find_by_external_id(self, task_id: str) -> ExternalItem | None:
        token: str | None = None
        jql = f'project = "{self.project_key}" AND labels = "{marker(task_id)}"'
        while True:
            body = await self.call(
                "POST",
                "/rest/api/3/search/jql",
                json={
                    "jql": jql,
                    "fields": ["summary", "description", "status", "labels", "assignee"],
                    "maxResults": 50,
                    **({"nextPageToken": token} if token else {}),
                },
            )
            for issue in body.get("issues", []):
                item = self._item(issue)
                if item.external_id == task_id:
                    return item
            token = body.get("nextPageToken")
            if not token or body.get("isLast", True):
                return None

    async def get_item(self, item_id: str) -> ExternalItem:
        return self._item(
            await self.call(
                "GET", f"/rest/api/3/issue/{item_id}", params={"fields": "summary,description,status,labels,assignee"}
            )
        )

    async def update_status(self, item_id: str, group: str) -> None:
        # A transition made twice is refused (the issue is no longer where it starts): looked for first.
        async def made() -> bool | None:
            return (await self.get_item(item_id)).group == group or None

        await self.made_once(lambda: self._transition(item_id, group), made)

    async def _transition(self, item_id: str, group: str) -> bool:
        target = self.status_names[group].lower()
        body = await self.call("GET", f"/rest/api/3/issue/{item_id}/transitions")
        for t in body.get("transitions", []):
            if str(t.get("to", {}).get("name", "")).lower() == target:
                await self.call(
                    "POST", f"/rest/api/3/issue/{item_id}/transitions", once=True, json={"transition": {"id": t["id"]}}
                )
                return True
        current = await self.get_item(item_id)
        if current.group != group:
            raise ProviderError(f"jira: the workflow of {item_id} offers no transition to {self.status_names[group]!r}")
        return True

    async def update_fields(self, item_id: str, fields: Fields) -> None:
        update: dict[str, Any] = {}
        if fields.title is not None:
            update["summary"] = fields.title
        if fields.description is not None:
            update["description"] = adf(fields.description)
        if fields.assignee is not None:
            update["assignee"] = {"accountId": fields.assignee}
        if fields.labels is not None:
            ext = (await self.get_item(item_id)).external_id
            update["labels"] = [marker(ext), *fields.labels]
        if update:
            await self.call("PUT", f"/rest/api/3/issue/{item_id}", json={"fields": update})

    async def add_comment(self, item_id: str, text: str) -> Comment:
        async def send() -> Comment:
            body = await self.call("POST", f"/rest/api/3/issue/{item_id}/comment", once=True, json={"body": adf(text)})
            return Comment(id=str(body["id"]), text=adf_text(body.get("body")))

        async def made() -> Comment | None:
            return same_comment(await self.list_comments(item_id), text)

        return await self.made_once(send, made)

    async def list_comments(self, item_id: str) -> list[Comment]:
        out: list[Comment] = []
        start = 0
        while True:
            body = await self.call(
                "GET", f"/rest/api/3/issue/{item_id}/comment", params={"startAt": start, "maxResults": 50}
            )
            rows = body.get("comments", [])
            out += [Comment(id=str(r["id"]), text=adf_text(r.get("body"))) for r in rows]
            start += len(rows)
            if not rows or start >= body.get("total", 0):
                return out

    async def link(self, item_id: str, title: str, url: str) -> None:
        # Keyed by its URL (globalId): the same link made again (its answer lost, or a crash before it was
        # recorded) updates it instead of adding one, so this write is safe to repeat as it is.
        body = {"globalId": url, "object": {"url": url, "title": title}}
        await self.call("POST", f"/rest/api/3/issue/{item_id}/remotelink", json=body)

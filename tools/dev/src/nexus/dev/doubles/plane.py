"""A Plane double: `/api/v1/workspaces/<slug>/projects/<id>/{states,work-items}/…` with X-API-Key,
cursor pagination, external ids, 60 requests/minute per key, and Plane-shaped signed webhooks."""

import hashlib
import hmac
import itertools
import json
import uuid
from typing import Any

from nexus.dev.doubles.base import HttpDouble, Reply, Request, paginate

GROUPS = ("backlog", "unstarted", "started", "completed", "cancelled")
NAME_MAX = 255  # a work item's name is a CharField(max_length=255)
_PROJECT = r"/api/v1/workspaces/(?P<slug>[^/]+)/projects/(?P<project>[^/]+)"


class PlaneDouble(HttpDouble):
    def __init__(
        self,
        *,
        workspace: str = "acme",
        project_id: str | None = None,
        api_keys: tuple[str, ...] = ("plane_api_key",),
        rate_limit: int = 60,
        window_s: float = 60.0,
        page_size: int = 100,
    ) -> None:
        super().__init__(rate_limit=rate_limit, window_s=window_s)
        self.page_size = page_size
        self.workspace = workspace
        self.project_id = project_id or str(uuid.uuid4())
        self.api_keys = set(api_keys)
        self.states = [
            {"id": str(uuid.uuid4()), "name": name, "group": group, "sequence": i}
            for i, (name, group) in enumerate(
                [
                    ("Backlog", "backlog"),
                    ("Todo", "unstarted"),
                    ("In Progress", "started"),
                    ("Done", "completed"),
                    ("Cancelled", "cancelled"),
                ]
            )
        ]
        self.items: dict[str, dict] = {}
        self.comments: dict[str, list[dict]] = {}
        self.links: dict[str, list[dict]] = {}
        self.creates = 0
        self._seq = itertools.count(1)
        r = self.route
        r("GET", _PROJECT + "/states/")(self._list_states)
        r("GET", _PROJECT + "/work-items/")(self._list_items)
        r("POST", _PROJECT + "/work-items/")(self._create)
        r("GET", _PROJECT + "/work-items/(?P<pk>[^/]+)/")(self._get)
        r("PATCH", _PROJECT + "/work-items/(?P<pk>[^/]+)/")(self._patch)
        r("GET", _PROJECT + "/work-items/(?P<pk>[^/]+)/comments/")(self._list_comments)
        r("POST", _PROJECT + "/work-items/(?P<pk>[^/]+)/comments/")(self._comment)
        r("GET", _PROJECT + "/work-items/(?P<pk>[^/]+)/links/")(self._list_links)
        r("POST", _PROJECT + "/work-items/(?P<pk>[^/]+)/links/")(self._link)

    def credential(self, req: Request) -> str | None:
        key = req.headers.get("x-api-key")
        return key if key in self.api_keys else None

    # ---------------------------------------------------------------- helpers for tests
    def state_id(self, group: str) -> str:
        return str(next(s["id"] for s in self.states if s["group"] == group))

    def group_of(self, item: dict) -> str:
        return str(next(s["group"] for s in self.states if s["id"] == item["state"]))

    def by_external_id(self, task_id: str) -> list[dict]:
        with self.lock:
            return [i for i in self.items.values() if i.get("external_id") == task_id]

    def edit(self, pk: str, **changes: Any) -> None:
        """A person edits the item in Plane's UI."""
        with self.lock:
            self.items[pk].update(changes)

    def webhook(
        self, secret: str, *, event: str, action: str, data: dict, activity: dict | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """A delivery as Plane sends it: the JSON body and its headers, signed with the webhook's secret."""
        payload = {
            "event": event,
            "action": action,
            "webhook_id": str(uuid.uuid4()),
            "workspace_id": str(uuid.uuid4()),
            "data": data,
            "activity": activity or {},
        }
        body = json.dumps(payload).encode()
        sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return body, {
            "Content-Type": "application/json",
            "User-Agent": "Autopilot",
            "X-Plane-Delivery": str(uuid.uuid4()),
            "X-Plane-Event": event,
            "X-Plane-Signature": sig,
        }

    # ---------------------------------------------------------------- routes
    def _project(self, slug: str, project: str) -> None:
        if slug != self.workspace or project != self.project_id:
            raise Reply(404, {"error": "Project not found"})

    def _item(self, slug: str, project: str, pk: str) -> dict:
        self._project(slug, project)
        if pk not in self.items:
            raise Reply(404, {"error": "The requested resource does not exist."})
        return self.items[pk]

    def _list_states(self, req: Request, slug: str, project: str):
        self._project(slug, project)
        return 200, paginate(self.states, req.query, self.page_size)

    def _list_items(self, req: Request, slug: str, project: str):
        self._project(slug, project)
        ext, source = req.query.get("external_id"), req.query.get("external_source")
        if ext and source:  # Plane answers one item, or 404
            found = [
                i for i in self.items.values() if i.get("external_id") == ext and i.get("external_source") == source
            ]
            if not found:
                raise Reply(404, {"error": "Issue not found"})
            return 200, found[0]
        return 200, paginate(list(self.items.values()), req.query, self.page_size)

    def _create(self, req: Request, slug: str, project: str):
        self._project(slug, project)
        body = req.body or {}
        if not body.get("name"):
            raise Reply(400, {"name": ["This field is required."]})
        self._check_name(body)
        if body.get("external_id") and body.get("external_source"):
            for i in self.items.values():
                if i.get("external_id") == body["external_id"] and i.get("external_source") == body["external_source"]:
                    raise Reply(
                        409,
                        {"error": "Issue with the same external id and external source already exists", "id": i["id"]},
                    )
        if body.get("state") and body["state"] not in {s["id"] for s in self.states}:
            raise Reply(400, {"state": ["Invalid state"]})
        pk = str(uuid.uuid4())
        self.items[pk] = {
            "id": pk,
            "name": body["name"],
            "description_html": body.get("description_html", ""),
            "state": body.get("state") or self.state_id("backlog"),
            "assignees": body.get("assignees", []),
            "labels": body.get("labels", []),
            "external_id": body.get("external_id"),
            "external_source": body.get("external_source"),
            "sequence_id": next(self._seq),
            "project": project,
            "workspace": slug,
        }
        self.creates += 1
        return 201, self.items[pk]

    @staticmethod
    def _check_name(body: dict) -> None:
        if len(body.get("name") or "") > NAME_MAX:
            raise Reply(400, {"name": [f"Ensure this field has no more than {NAME_MAX} characters."]})

    def _get(self, req: Request, slug: str, project: str, pk: str):
        return 200, self._item(slug, project, pk)

    def _patch(self, req: Request, slug: str, project: str, pk: str):
        item = self._item(slug, project, pk)
        body = req.body or {}
        if "state" in body and body["state"] not in {s["id"] for s in self.states}:
            raise Reply(400, {"state": ["Invalid state"]})
        self._check_name(body)
        for k in ("name", "description_html", "state", "assignees", "labels"):
            if k in body:
                item[k] = body[k]
        return 200, item

    def _list_comments(self, req: Request, slug: str, project: str, pk: str):
        self._item(slug, project, pk)
        return 200, paginate(self.comments.get(pk, []), req.query, self.page_size)

    def _comment(self, req: Request, slug: str, project: str, pk: str):
        self._item(slug, project, pk)
        c = {"id": str(uuid.uuid4()), "comment_html": (req.body or {}).get("comment_html", ""), "issue": pk}
        self.comments.setdefault(pk, []).append(c)
        return 201, c

    def _list_links(self, req: Request, slug: str, project: str, pk: str):
        self._item(slug, project, pk)
        return 200, paginate(self.links.get(pk, []), req.query, self.page_size)

    def _link(self, req: Request, slug: str, project: str, pk: str):
        self._item(slug, project, pk)
        body = req.body or {}
        if any(lk["url"] == body.get("url") for lk in self.links.get(pk, [])):
            raise Reply(400, {"error": "URL already exists for this Issue"})
        lk = {"id": str(uuid.uuid4()), "title": body.get("title", ""), "url": body.get("url", ""), "issue": pk}
        self.links.setdefault(pk, []).append(lk)
        return 201, lk

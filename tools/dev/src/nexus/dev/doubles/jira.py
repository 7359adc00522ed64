"""A Jira Cloud double: REST v3 issues with basic auth, a workflow's transitions, ADF bodies,
enhanced JQL search (label marker) with nextPageToken paging, and Retry-After on 429."""

import base64
import itertools
import re
from typing import Any

from nexus.dev.doubles.base import HttpDouble, Reply, Request

STATUSES = {  # name -> status category
    "Backlog": "new",
    "To Do": "new",
    "In Progress": "indeterminate",
    "Done": "done",
    "Cancelled": "done",
}
SUMMARY_MAX = 255
RICH_TEXT_MAX = 32_767
_LABEL = re.compile(r'labels\s*=\s*"([^"]+)"')


class JiraDouble(HttpDouble):
    def __init__(
        self,
        *,
        project_key: str = "NEX",
        users: dict[str, str] | None = None,
        rate_limit: int = 100,
        window_s: float = 60.0,
        page_size: int = 2,
    ) -> None:
        super().__init__(rate_limit=rate_limit, window_s=window_s)
        self.project_key = project_key
        self.users = users or {"bot@example.com": "jira_api_token"}
        self.page_size = page_size
        self.issues: dict[str, dict] = {}
        self.comments: dict[str, list[dict]] = {}
        self.remote_links: dict[str, list[dict]] = {}
        self.creates = 0
        self._n = itertools.count(1)
        self._ids = itertools.count(10000)
        r = self.route
        r("POST", "/rest/api/3/issue")(self._create)
        r("GET", "/rest/api/3/issue/(?P<key>[^/]+)")(self._get)
        r("PUT", "/rest/api/3/issue/(?P<key>[^/]+)")(self._edit)
        r("GET", "/rest/api/3/issue/(?P<key>[^/]+)/transitions")(self._transitions)
        r("POST", "/rest/api/3/issue/(?P<key>[^/]+)/transitions")(self._transition)
        r("GET", "/rest/api/3/issue/(?P<key>[^/]+)/comment")(self._list_comments)
        r("POST", "/rest/api/3/issue/(?P<key>[^/]+)/comment")(self._comment)
        r("POST", "/rest/api/3/issue/(?P<key>[^/]+)/remotelink")(self._remote_link)
        r("POST", "/rest/api/3/search/jql")(self._search)

    def credential(self, req: Request) -> str | None:
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Basic "):
            return None
        try:
            email, token = base64.b64decode(auth[6:]).decode().split(":", 1)
        except (ValueError, UnicodeDecodeError):
            return None
        return email if self.users.get(email) == token else None

    def _issue(self, key: str) -> dict:
        if key not in self.issues:
            raise Reply(
                404, {"errorMessages": ["Issue does not exist or you do not have permission to see it."], "errors": {}}
            )
        return self.issues[key]

    @staticmethod
    def _status(name: str) -> dict:
        return {"name": name, "statusCategory": {"key": STATUSES[name]}}

    def _create(self, req: Request):
        fields = (req.body or {}).get("fields", {})
        if not fields.get("summary"):
            raise Reply(400, {"errorMessages": [], "errors": {"summary": "You must specify a summary of the issue."}})
        if (fields.get("project") or {}).get("key") != self.project_key:
            raise Reply(400, {"errorMessages": [], "errors": {"project": "valid project is required"}})
        self._check_fields(fields)
        key = f"{self.project_key}-{next(self._n)}"
        self.issues[key] = {
            "id": str(next(self._ids)),
            "key": key,
            "fields": {
                "summary": fields["summary"],
                "description": fields.get("description"),
                "labels": fields.get("labels", []),
                "assignee": fields.get("assignee"),
                "status": self._status("Backlog"),
            },
        }
        self.creates += 1
        return 201, {"id": self.issues[key]["id"], "key": key, "self": f"/rest/api/3/issue/{key}"}

    @staticmethod
    def _check_fields(fields: dict) -> None:
        """Jira's own checks: a one-line summary under 255 characters, rich text under 32,767."""
        summary = fields.get("summary")
        if isinstance(summary, str) and ("\n" in summary or "\r" in summary):
            raise Reply(
                400, {"errorMessages": [], "errors": {"summary": "Field 'summary' cannot contain newline characters."}}
            )
        if isinstance(summary, str) and len(summary) > SUMMARY_MAX:
            raise Reply(400, {"errorMessages": [], "errors": {"summary": "Summary must be less than 255 characters."}})
        blocks = (fields.get("description") or {}).get("content", [])
        text = "\n".join("".join(n.get("text", "") for n in b.get("content", [])) for b in blocks)
        if len(text) > RICH_TEXT_MAX:
            raise Reply(400, {"errorMessages": [], "errors": {"description": "The entered text is too long."}})

    def _get(self, req: Request, key: str):
        return 200, self._issue(key)

    def _edit(self, req: Request, key: str):
        issue = self._issue(key)
        self._check_fields((req.body or {}).get("fields") or {})
        for k, v in ((req.body or {}).get("fields") or {}).items():
            if k in ("summary", "description", "labels", "assignee"):
                issue["fields"][k] = v
        return 204, None

    def _transitions(self, req: Request, key: str):
        current = self._issue(key)["fields"]["status"]["name"]
        return 200, {
            "transitions": [
                {"id": str(i + 11), "name": f"Move to {name}", "to": self._status(name)}
                for i, name in enumerate(STATUSES)
                if name != current
            ]
        }

    def _transition(self, req: Request, key: str):
        issue = self._issue(key)
        tid = ((req.body or {}).get("transition") or {}).get("id")
        names = list(STATUSES)
        try:
            name = names[int(tid or "") - 11]
        except (TypeError, ValueError, IndexError):
            name = ""
        if name not in STATUSES or name == issue["fields"]["status"]["name"]:  # Jira offers none to where it is
            raise Reply(400, {"errorMessages": ["Transition id is not valid for this issue."], "errors": {}})
        issue["fields"]["status"] = self._status(name)
        return 204, None

    def _list_comments(self, req: Request, key: str):
        rows = self.comments.get(self._issue(key)["key"], [])
        start, size = int(req.query.get("startAt", 0)), min(int(req.query.get("maxResults", 50)), self.page_size)
        return 200, {"startAt": start, "maxResults": size, "total": len(rows), "comments": rows[start : start + size]}

    def _comment(self, req: Request, key: str):
        self._issue(key)
        c = {"id": str(next(self._ids)), "body": (req.body or {}).get("body")}
        self.comments.setdefault(key, []).append(c)
        return 201, c

    def _remote_link(self, req: Request, key: str):
        self._issue(key)
        obj: dict[str, Any] = (req.body or {}).get("object") or {}
        links = self.remote_links.setdefault(key, [])
        global_id = (req.body or {}).get("globalId")
        if global_id is not None:  # Jira: a link with the same globalId is updated, not added again
            for i, existing in enumerate(links):
                if existing.get("globalId") == global_id:
                    links[i] = {**obj, "globalId": global_id}
                    return 200, {"id": i + 1, "self": f"/rest/api/3/issue/{key}/remotelink"}
            obj = {**obj, "globalId": global_id}
        links.append(obj)
        return 201, {"id": next(self._ids), "self": f"/rest/api/3/issue/{key}/remotelink"}

    def _search(self, req: Request):
        body = req.body or {}
        m = _LABEL.search(body.get("jql", ""))
        rows = [i for i in self.issues.values() if not m or m.group(1) in i["fields"]["labels"]]
        start = int(body.get("nextPageToken") or 0)
        size = min(int(body.get("maxResults", 50)), self.page_size)
        page = rows[start : start + size]
        more = start + size < len(rows)
        return 200, {"issues": page, "isLast": not more, **({"nextPageToken": str(start + size)} if more else {})}

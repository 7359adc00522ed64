"""A thin HTTP client over the Nexus API: bearer auth, problem+json turned into ApiError."""

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from nexus.domain.json_types import JsonObject
from nexus.nexusctl.config import Target

USER_AGENT = "nexusctl/0.1"


class BadValue(Exception):
    """A value given on the command line that cannot go into a request as typed."""


NOT_UTF8 = "a value given is not valid UTF-8 text (check the shell's encoding or the bytes typed)"


def seg(value: object) -> str:
    """A name or id as ONE path segment, whatever it holds: a slash, `?`, `#` or `%` stays inside it,
    and a `.` or `..` is not read as a step up the path."""
    text = str(value)
    try:
        quoted = quote(text, safe="")
    except UnicodeEncodeError:
        raise BadValue(NOT_UTF8) from None
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


class ApiError(Exception):
    """An error answer from the API (problem+json), or no answer at all (status 0)."""

    def __init__(self, status: int, title: str, detail: str = "", errors: list[JsonObject] | None = None) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []

    @classmethod
    def from_response(cls, r: httpx.Response) -> "ApiError":
        try:
            body = r.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return cls(r.status_code, r.reason_phrase or "error", r.text[:500])
        errors = body.get("errors") if isinstance(body.get("errors"), list) else []
        return cls(r.status_code, str(body.get("title") or r.reason_phrase), str(body.get("detail") or ""), errors)

    def lines(self, field_prefix: str = "") -> list[str]:
        """Human lines: the status and title, then one line per failing field."""
        head = f"{self.title} ({self.status})" if self.status else self.title
        out = [f"{head}: {self.detail}" if self.detail and not self.errors else head]
        for e in self.errors:
            field = e.get("field")
            where = f"{field_prefix}{field}" if field else (field_prefix.rstrip(".") or "body")
            out.append(f"  {where}: {e.get('message', '')}")
        return out


class Client:
    def __init__(self, target: Target, *, timeout: float = 30.0) -> None:
        self.target = target
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if target.api_key:
            headers["Authorization"] = f"Bearer {target.api_key}"
        self.http = httpx.Client(base_url=target.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, json: Any = None, params: JsonObject | None = None) -> Any:
        try:
            r = self.http.request(method, path, json=json, params=params)
        except UnicodeEncodeError:
            raise BadValue(NOT_UTF8) from None
        except httpx.TransportError as exc:
            raise ApiError(0, f"cannot reach Nexus at {self.target.url}", type(exc).__name__) from None
        if r.status_code >= 400:
            raise ApiError.from_response(r)
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None} or None)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def pages(self, path: str, *, limit: int, params: JsonObject | None = None) -> Iterator[JsonObject]:
        """Follow `next_cursor` until `limit` items were yielded or the list ends."""
        cursor = None
        left = limit
        while left > 0:
            page = self.get(path, limit=min(left, 500), cursor=cursor, **(params or {}))
            items = page.get("items", []) if isinstance(page, dict) else page
            yield from items[:left]
            left -= len(items)
            cursor = page.get("next_cursor") if isinstance(page, dict) else None
            if not cursor or not items:
                return

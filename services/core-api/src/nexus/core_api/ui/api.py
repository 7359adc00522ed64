"""The UI's one way into the system: an in-process call of the API's own route handlers with the
signed-in key, so every rule (schema, role, state machine, audit) is the API's, never a copy."""

from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlencode

import msgspec
from litestar.exceptions import HTTPException
from litestar.types import HTTPReceiveMessage, Message, Scope

from nexus.core_api.ui.auth import UiRequest
from nexus.core_api.ui.session import UiSession
from nexus.domain.json_types import JsonObject


@dataclass
class ApiResult:
    status: int
    body: Any
    errors: dict[str, str] = field(default_factory=dict)  # failing field → message, from problem+json

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def detail(self) -> str:
        return self.body.get("detail", "") if isinstance(self.body, dict) else ""


class Api:
    def __init__(self, request: UiRequest) -> None:
        self.request = request
        session: UiSession | None = request.auth
        self.key = session.key if session else None

    async def call(self, method: str, path: str, *, json: Any = None, params: JsonObject | None = None) -> ApiResult:
        body = msgspec.json.encode(json) if json is not None else b""
        headers = [(b"accept", b"application/json"), (b"content-length", str(len(body)).encode())]
        if json is not None:
            headers.append((b"content-type", b"application/json"))
        if self.key:
            headers.append((b"authorization", f"Bearer {self.key}".encode()))
        query = urlencode({k: v for k, v in (params or {}).items() if v not in (None, "")}).encode()
        src = self.request.scope
        # The plain ASGI keys: the app adds its own (app, route handler, state…) as for any request.
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": src.get("scheme", "http"),
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query,
            "headers": headers,
            "client": src.get("client"),
            "server": src.get("server"),
            "state": {},
        }
        sent = False

        async def receive() -> HTTPReceiveMessage:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status, chunks = 500, []

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.request.app(cast(Scope, scope), receive, send)
        raw = b"".join(chunks)
        decoded = msgspec.json.decode(raw) if raw else None
        errors = {}
        if status >= 400 and isinstance(decoded, dict):
            for e in decoded.get("errors") or []:
                errors[e.get("field") or "body"] = e.get("message", "")
            if not errors:
                errors["body"] = decoded.get("detail", "")
        return ApiResult(status, decoded, errors)

    async def get(self, path: str, **params: Any) -> Any:
        """A read the page cannot do without: its failure is the page's (404 stays 404)."""
        r = await self.call("GET", path, params=params)
        if not r.ok:
            raise HTTPException(status_code=r.status, detail=r.detail or "the request failed")
        return r.body

    async def post(self, path: str, json: Any = None) -> ApiResult:
        return await self.call("POST", path, json=json if json is not None else {})

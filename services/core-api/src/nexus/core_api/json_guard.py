"""JSON bodies the decoder cannot be trusted with are refused with a 400 before any handler parses
them: nesting deeper than any Nexus document needs (the decoder recurses, and 1,000 levels in a 2 KB
body exhaust it) and bytes that are not UTF-8 (inside a string the decoder raises, not reports).

A NUL character in a query or path value, and in a body a NUL or an integer past 64 bits, is refused
with a 422 naming its field: the database cannot hold one (PostgreSQL's text and jsonb refuse a NUL,
BSON an integer that wide), so it would fail as a 500 at the first read or write that carried it."""

import re

from litestar.enums import RequestEncodingType
from litestar.exceptions import ValidationException

from nexus.core_api.auth.requests import OpenRequest
from nexus.core_api.errors import BodyRefused
from nexus.domain.limits import NUL_MESSAGE, unstorable

MAX_DEPTH = 64
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class MalformedBody(BodyRefused):
    status_code = 400


class NotJson(BodyRefused):
    status_code = 415
    field = "content-type"


def nesting_depth(body: bytes) -> int:
    """The deepest array/object nesting, brackets inside strings not counted."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(_STRING.sub(b'""', body)):
        if m.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def problem_in(body: bytes) -> str | None:
    """Why this body cannot be read as JSON safely, or None."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the body is not valid UTF-8 (byte {exc.start}: {exc.reason})"
    depth = nesting_depth(body)
    if depth > MAX_DEPTH:
        return f"the JSON body is nested {depth} levels deep; at most {MAX_DEPTH} are accepted"
    return None


def _refuse(field: str, message: str, source: str) -> None:
    raise ValidationException(
        detail=f"{field}: {message}", extra=[{"key": field, "message": message, "source": source}]
    )


def guard_nul(request: OpenRequest) -> None:
    for name, value in request.query_params.items():
        if "\x00" in name or "\x00" in str(value):
            _refuse(name, NUL_MESSAGE, "query")
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            _refuse(name, NUL_MESSAGE, "path")


def takes_json(request: OpenRequest) -> bool:
    """Whether the route's handler reads a JSON body (`data`); webhooks and the UI's forms read their own."""
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    return data is not None and getattr(data.kwarg_definition, "media_type", None) == RequestEncodingType.JSON


async def guard_json_body(request: OpenRequest) -> None:
    guard_nul(request)
    if request.method not in _BODY_METHODS:
        return
    content_type = request.headers.get("content-type", "json")
    if "json" not in content_type:
        if takes_json(request) and await request.body():
            raise NotJson(detail=f"the body must be JSON (Content-Type: application/json), not {content_type[:100]!r}")
        return
    body = await request.body()  # cached: the handler's own parse reads the same bytes
    if body and (reason := problem_in(body)):
        raise MalformedBody(detail=reason)
    if body and (found := unstorable(body)) is not None:
        field, message = found
        _refuse(field or "body", message, "body")

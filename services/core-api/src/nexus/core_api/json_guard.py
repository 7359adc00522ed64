"""JSON bodies the decoder cannot be trusted with are refused with a 400 before any handler parses
them: nesting deeper than any Nexus document needs (the decoder recurses, and 1,000 levels in a 2 KB
body exhaust it) and bytes that are not UTF-8 (inside a string the decoder raises, not reports)."""

import re

from litestar.exceptions import HTTPException

from nexus.core_api.auth.requests import OpenRequest

MAX_DEPTH = 64
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class MalformedBody(HTTPException):
    status_code = 400


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


async def guard_json_body(request: OpenRequest) -> None:
    if request.method not in _BODY_METHODS or "json" not in request.headers.get("content-type", "json"):
        return
    body = await request.body()  # cached: the handler's own parse reads the same bytes
    if body and (reason := problem_in(body)):
        raise MalformedBody(detail=reason)

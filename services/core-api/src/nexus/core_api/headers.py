"""Headers on every response, whoever answered it (a route, an error handler, the router's own 404):
no other site may frame a page (a hidden Approve button under a decoy is clickjacking), no body is
sniffed into another type, nothing is kept by a browser or proxy cache (a key is shown once, in the
answer that created it), and no address leaves in a Referer (a sign-in link carries its token in
the query). The UI's pages also run only the scripts it serves itself: a title or name that slipped
past escaping could not run as script."""

from litestar.types import Message, Scope

_ALL = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_NO_STORE = (b"cache-control", b"no-store")
_FRAMED_BY_NONE = (b"content-security-policy", b"frame-ancestors 'none'")
# htmx adds its indicator styles inline; scripts and connections (htmx requests, event streams) stay home.
UI_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'"
)
_UI = (b"content-security-policy", UI_POLICY.encode())


async def security_headers(message: Message, scope: Scope) -> None:
    """A `before_send` hook: runs for every message the app sends, so it returns at once for body chunks."""
    if message["type"] != "http.response.start":
        return
    path: str = scope.get("path", "")
    headers = [*message.get("headers", ()), *_ALL, _UI if path.startswith("/ui") else _FRAMED_BY_NONE]
    if not path.startswith("/ui/static/") and not any(k.lower() == b"cache-control" for k, _ in headers):
        headers.append(_NO_STORE)  # an event stream's own no-cache stays
    message["headers"] = headers

"""Who is signed in to the UI: the sealed session cookie gives the API key, the key gives the same
Principal the API's own middleware would; CSRF is checked on every state-changing request."""

from typing import TypeAlias

from litestar import Litestar
from litestar.connection import ASGIConnection, Request
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from nexus.core_api.auth.keys import KeyCache, Principal
from nexus.core_api.ui.session import COOKIE, CSRF_FIELD, CSRF_HEADER, Sealer, UiSession, csrf_ok

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# A UI request: the signed-in Principal (None before sign-in) and its sealed session (None without a cookie).
UiRequest: TypeAlias = Request[Principal | None, UiSession | None, State]
UiConnection: TypeAlias = ASGIConnection[BaseRouteHandler, Principal | None, UiSession | None, State]


def sealer(app: Litestar) -> Sealer:
    found = getattr(app.state, "ui_sealer", None)
    if found is None:
        found = Sealer.from_secret(app.state.settings.ui_session_secret)
        app.state.ui_sealer = found
    return found


class UiSessionAuth(AbstractAuthenticationMiddleware):
    """Never refuses by itself: a page without a signed-in user is refused by its guard (→ sign-in)."""

    async def authenticate_request(self, connection: UiConnection) -> AuthenticationResult:
        session = sealer(connection.app).open(connection.cookies.get(COOKIE))
        principal = None
        if session and session.key:
            cache: KeyCache = connection.app.state.key_cache
            principal = await cache.lookup(session.key)
        return AuthenticationResult(user=principal, auth=session)


async def csrf_guard(connection: UiConnection, _: BaseRouteHandler) -> None:
    """Every POST carries the session's token, as a form field or (htmx) a header; SameSite=Strict is
    the second lock."""
    if connection.scope.get("method", "GET") in SAFE_METHODS:
        return
    session: UiSession | None = connection.auth
    presented = connection.headers.get(CSRF_HEADER)
    if not presented and isinstance(connection, Request):  # an HTTP route's connection is its Request
        form = await connection.form()
        presented = form.get(CSRF_FIELD)
    if not csrf_ok(session, presented):
        raise PermissionDeniedException("the form's CSRF token is missing or stale; reload the page")

"""Sign in (an API key exchanged for a session cookie), sign out, and how the UI answers a refusal."""

from typing import Any
from urllib.parse import quote

from litestar import Response, get, post
from litestar.datastructures import Cookie
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.params import FromQuery
from litestar.response import Redirect

from nexus.core_api.audit.service import record
from nexus.core_api.auth.keys import KeyCache, Principal
from nexus.core_api.keys import service as keys
from nexus.core_api.ui.auth import UiRequest, sealer
from nexus.core_api.ui.render import form_of, page
from nexus.core_api.ui.session import COOKIE, UiSession, new_session
from nexus.domain.roles import Role


def _safe_next(value: str | None) -> str:
    return value if value and value.startswith("/ui/") and not value.startswith("//") else "/ui/board"


def _cookie(request: UiRequest, session: UiSession | None) -> Cookie:
    tls = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    ttl = int(request.app.state.settings.ui_session_ttl_s)
    value = sealer(request.app).seal(session) if session else ""
    return Cookie(
        key=COOKIE, value=value, path="/ui", httponly=True, samesite="strict", secure=tls, max_age=ttl if session else 0
    )


def with_session(request: UiRequest, response: Response[Any], session: UiSession | None) -> Response[Any]:
    response.set_cookie(_cookie(request, session))
    return response


@get("/login", include_in_schema=False)
async def login_form(request: UiRequest, next: FromQuery[str | None] = None) -> Response[Any]:
    session: UiSession | None = request.auth
    fresh = session or new_session(request.app.state.settings.ui_session_ttl_s)
    request.scope["auth"] = fresh  # the form's CSRF token is this session's
    return with_session(request, page(request, "login.html", next=_safe_next(next)), fresh)


@post("/login", include_in_schema=False, status_code=303)
async def login(request: UiRequest) -> Response[Any]:
    form = await form_of(request)
    raw = form.get("key", "").strip()
    cache: KeyCache = request.app.state.key_cache
    principal: Principal | None = await cache.lookup(raw) if raw else None
    if principal is None or principal.role == Role.RUNNER:
        return page(
            request,
            "login.html",
            status=401,
            next=_safe_next(form.get("next")),
            error="unknown or revoked key" if raw else "paste an API key",
        )
    # A new CSRF token with the new identity.
    session = new_session(request.app.state.settings.ui_session_ttl_s, key=raw)
    return with_session(request, Redirect(_safe_next(form.get("next")), status_code=303), session)


@post("/logout", include_in_schema=False, status_code=303)
async def logout(request: UiRequest) -> Response[Any]:
    """The cookie is cleared; a copy of it kept elsewhere ends too when its key was the session's own (a
    login link's), as that key is revoked. A pasted key is its holder's: it ends with the cookie's expiry."""
    session: UiSession | None = request.auth
    if session and session.own_key and isinstance(request.user, Principal):
        doc = await keys.revoke(request.user.key_id, request.app.state.key_cache)
        await record(request.user, "api_key.revoke", f"api-keys/{doc.id}", before_id=doc.id)
    return with_session(request, Redirect("/ui/login", status_code=303), None)


def ui_error(request: UiRequest, exc: HTTPException) -> Response[Any]:
    """A page needing a sign-in sends there; any other refusal is a page saying why, with its status."""
    if isinstance(exc, NotAuthorizedException) and request.method == "GET" and "hx-request" not in request.headers:
        # Quoted: a path holding `&next=` or `#` stays one value (the sign-in keeps it only when it is under /ui/).
        return Redirect(f"/ui/login?next={quote(request.url.path, safe='/')}", status_code=303)
    status = exc.status_code
    return page(request, "error.html", status=status, status_code=status, detail=exc.detail)

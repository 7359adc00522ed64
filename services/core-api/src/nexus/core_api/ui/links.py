"""One-time sign-in links an admin mints (`nexusctl keys login-link`): the link carries a fresh key,
sealed and short-lived; using it revokes that key (compare-and-set, so only one use wins) and signs
in with a new key of the same role, so a link seen twice, or after its expiry, signs nobody in."""

import time
from typing import Annotated, Any, Literal

import msgspec
from litestar import Response, get, post
from litestar.params import FromQuery, JSONBody
from litestar.response import Redirect

from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import MANAGE_KEYS
from nexus.core_api.auth.keys import KeyCache, Principal, create_key
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.schemas import Body, Name, Out
from nexus.core_api.ui.access import with_session
from nexus.core_api.ui.auth import UiRequest, sealer
from nexus.core_api.ui.render import form_of, page
from nexus.core_api.ui.session import LoginLink, new_session
from nexus.db.documents import ApiKey
from nexus.db.writes import update_document
from nexus.domain.roles import Role

TtlS = Annotated[int, msgspec.Meta(ge=60, le=7 * 86400)]


class LoginLinkCreate(Body):
    name: Name  # who the link is for; the session's key is named after it
    role: Literal["admin", "lead", "viewer"]
    ttl_s: TtlS = 900


class LoginLinkOut(Out):
    path: str  # append to core-api's address: /ui/login/link?t=…
    key_id: str
    expires_in_s: int


@post("/v1/ui/login-links", guards=[MANAGE_KEYS], tags=["api-keys"])
async def mint_login_link(request: ApiRequest, data: JSONBody[LoginLinkCreate]) -> LoginLinkOut:
    """A one-time web UI sign-in for `name` with `role`, valid `ttl_s` seconds; shown once."""
    doc, raw = await create_key(f"{data.name}-link", Role(data.role), created_by=request.user.key_id)
    await record(request.user, "api_key.create", f"api-keys/{doc.id}", after_id=doc.id)
    token = sealer(request.app).seal(LoginLink(key=raw, exp=time.time() + data.ttl_s))
    return LoginLinkOut(path=f"/ui/login/link?t={token}", key_id=doc.id, expires_in_s=data.ttl_s)


async def _link_key(request: UiRequest, token: str | None) -> ApiKey | None:
    link = sealer(request.app).open(token, LoginLink)
    if link is None:
        return None
    cache: KeyCache = request.app.state.key_cache
    principal = await cache.lookup(link.key)
    return await ApiKey.get(principal.key_id) if principal else None


@get("/login/link", include_in_schema=False)
async def link_form(request: UiRequest, t: FromQuery[str | None] = None) -> Response[Any]:
    """Asks before using the link: a link preview fetching the page must not spend it."""
    doc = await _link_key(request, t)
    session = request.auth or new_session(request.app.state.settings.ui_session_ttl_s)
    request.scope["auth"] = session
    if doc is None:
        return page(
            request, "error.html", status=401, status_code=401, detail="this sign-in link has expired or was used"
        )
    return with_session(
        request, page(request, "link.html", token=t, who=doc.name.removesuffix("-link"), role=doc.role), session
    )


@post("/login/link", include_in_schema=False, status_code=303)
async def use_link(request: UiRequest) -> Response[Any]:
    form = await form_of(request)
    doc = await _link_key(request, form.get("t"))
    spent = (
        doc is not None
        and (await update_document(ApiKey, doc.id, {"$set": {"revoked": True}}, {"revoked": False})).modified_count == 1
    )
    if doc is None or not spent:
        return page(
            request, "error.html", status=401, status_code=401, detail="this sign-in link has expired or was used"
        )
    request.app.state.key_cache.forget()
    key, raw = await create_key(doc.name.removesuffix("-link") + "-ui", Role(doc.role), created_by=doc.id)
    holder = Principal(doc.id, doc.name, Role(doc.role))
    await record(holder, "api_key.revoke", f"api-keys/{doc.id}", before_id=doc.id)
    await record(holder, "api_key.create", f"api-keys/{key.id}", after_id=key.id)
    session = new_session(request.app.state.settings.ui_session_ttl_s, key=raw, own_key=True)
    return with_session(request, Redirect("/ui/board", status_code=303), session)

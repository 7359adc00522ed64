"""Authentication (a key on every request but health and docs) and one guard per capability."""

from collections.abc import Awaitable, Callable

from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from nexus.core_api.auth.keys import KeyCache, Principal
from nexus.core_api.auth.requests import Connection
from nexus.domain.roles import Capability, Role, allows

PUBLIC_PATHS = {"/healthz", "/readyz"}
PUBLIC_PREFIXES = ("/schema",)


def _raw_key(connection: Connection) -> str | None:
    auth = connection.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return connection.headers.get("x-api-key")


class ApiKeyAuth(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: Connection) -> AuthenticationResult:
        path = connection.scope["path"]
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return AuthenticationResult(user=None, auth=None)
        raw = _raw_key(connection)
        if not raw:
            raise NotAuthorizedException("an API key is required (Authorization: Bearer <key>)")
        cache: KeyCache = connection.app.state.key_cache
        principal = await cache.lookup(raw)
        if principal is None:
            raise NotAuthorizedException("unknown or revoked API key")
        return AuthenticationResult(user=principal, auth=raw)


def require(capability: Capability) -> Callable[[Connection, BaseRouteHandler], Awaitable[None]]:
    async def guard(connection: Connection, _: BaseRouteHandler) -> None:  # async: no thread hop per request
        principal: Principal | None = connection.user
        if principal is None:
            raise NotAuthorizedException("an API key is required")
        if allows(principal.role, capability):
            return
        # A runner token may read and act on its own run, nothing else.
        if principal.role == Role.RUNNER and capability in (Capability.READ, Capability.RUN_SELF):
            if connection.path_params.get("run_id") == principal.run_id and principal.run_id:
                return
        raise PermissionDeniedException(f"role {principal.role.value!r} may not {capability.value}")

    guard.__name__ = f"require_{capability.value}"
    guard.capability = capability  # type: ignore[attr-defined]  # a mark on the function, read by the route × role test
    return guard


READ = require(Capability.READ)
MANAGE_AGENTS = require(Capability.MANAGE_AGENTS)
MANAGE_WORK = require(Capability.MANAGE_WORK)
DECIDE_APPROVALS = require(Capability.DECIDE_APPROVALS)
MANAGE_KEYS = require(Capability.MANAGE_KEYS)
RUN_SELF = require(Capability.RUN_SELF)

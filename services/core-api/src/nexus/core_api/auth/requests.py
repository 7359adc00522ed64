"""The request types core-api's handlers see, named once."""

from typing import TypeAlias

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler

from nexus.core_api.auth.keys import Principal

# Behind the API-key middleware: `user` is the caller's Principal, `auth` the key it presented.
ApiRequest: TypeAlias = Request[Principal, str, State]
# Any request (health, webhooks, error handlers): whoever sent it is not read.
OpenRequest: TypeAlias = Request[object, object, State]
# What the API-key middleware and the guards see: a Principal once authenticated, None on public paths.
Connection: TypeAlias = ASGIConnection[BaseRouteHandler, Principal | None, str | None, State]

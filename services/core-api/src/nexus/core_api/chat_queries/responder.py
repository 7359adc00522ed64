"""`nexus.rpc.core.<query>`: a JSON request {principal, args}, a JSON reply {ok, data} or {ok: false,
error}. A query naming a chat principal is answered only if that user is bound; `whoami` answers for
any principal (with no binding: null)."""

import asyncio
import logging

import msgspec
from nats.aio.msg import Msg

from nexus.core_api.chat_bindings.service import Refused, check
from nexus.core_api.chat_queries.queries import QUERIES
from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError
from nexus.db.documents import ChatBinding
from nexus.domain.json_types import JsonObject
from nexus.domain.limits import unstorable
from nexus.domain.roles import Capability
from nexus.events.payloads import ChatPrincipal

log = logging.getLogger("nexus.core_api.chat_queries")
RPC_SUBJECT = "nexus.rpc.core.*"


class QueryRequest(msgspec.Struct, kw_only=True):
    # Without a principal the asker reads for itself (a gateway composing an alert); which services may
    # ask at all is decided by the NATS permissions on `nexus.rpc.core.>`.
    principal: ChatPrincipal | None = None
    args: JsonObject = msgspec.field(default_factory=dict)


async def answer(query: str, body: bytes) -> JsonObject:
    try:
        req = msgspec.json.decode(body, type=QueryRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return {"ok": False, "error": f"bad request: {exc}"}
    if (found := unstorable(body)) is not None:  # no read could match it: refused as over HTTP
        return {"ok": False, "error": f"bad request: {found[1]} (at `$.{found[0]}`)"}
    if query == "whoami":
        if req.principal is None:
            return {"ok": False, "error": "whoami needs a principal"}
        b = await ChatBinding.get(f"{req.principal.provider}:{req.principal.user_id}")
        return {"ok": True, "data": {"identity": b.identity, "role": b.role} if b else None}
    fn = QUERIES.get(query)
    if fn is None:
        return {"ok": False, "error": f"unknown query {query!r}"}
    try:
        if req.principal is not None:
            await check(req.principal, Capability.READ)
        return {"ok": True, "data": await fn(req.args)}
    except Refused as exc:
        return {"ok": False, "error": str(exc), "refused": True}
    except DomainError as exc:
        return {"ok": False, "error": str(exc.detail)}


async def serve_queries(ctx: Context, stop: asyncio.Event) -> None:
    async def on_request(msg: Msg) -> None:
        query = msg.subject.rsplit(".", 1)[-1]
        try:
            reply = await answer(query, msg.data)
        except Exception as exc:  # the asker gets an answer, the responder lives on
            log.exception("query %s failed", query)
            # not an answer but a failure to give one (the database away, say): the asker may ask again
            reply = {"ok": False, "error": f"query failed: {type(exc).__name__}", "retry": True}
        await msg.respond(msgspec.json.encode(reply))

    sub = await ctx.nc.subscribe(RPC_SUBJECT, queue="core-api", cb=on_request)
    try:
        await stop.wait()
    finally:
        await sub.unsubscribe()

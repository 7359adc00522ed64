"""Bindings are written by admins; every chat act is checked against them here, in core-api, whoever
relayed it: a principal without a binding, or whose role lacks the capability, is refused."""

from nexus.core_api.auth.keys import Principal
from nexus.core_api.errors import DomainError, not_found
from nexus.db.documents import ChatBinding, now
from nexus.db.writes import update_document
from nexus.domain.roles import Capability, Role, allows
from nexus.events.payloads import ChatPrincipal


class Refused(Exception):
    """A chat principal that does not check out; the message says why (it is shown to the chat user)."""


def binding_id(provider: str, user_id: str) -> str:
    return f"{provider}:{user_id}"


async def bind(provider: str, user_id: str, identity: str, role: str, *, created_by: str) -> tuple[ChatBinding, bool]:
    """Create or replace the binding of one chat user; returns (binding, created)."""
    bid = binding_id(provider, user_id)
    res = await update_document(
        ChatBinding,
        bid,
        {
            "$set": {"identity": identity, "role": role, "updated_at": now()},
            "$setOnInsert": {"provider": provider, "user_id": user_id, "created_by": created_by, "created_at": now()},
        },
        upsert=True,
    )
    doc = await ChatBinding.get(bid)
    assert doc is not None
    return doc, res.upserted_id is not None


async def get(bid: str) -> ChatBinding:
    doc = await ChatBinding.get(bid)
    if doc is None:
        raise not_found("chat binding", bid)
    return doc


async def unbind(bid: str) -> ChatBinding:
    doc = await get(bid)
    await doc.delete()
    return doc


async def check(principal: ChatPrincipal | None, capability: Capability) -> ChatBinding:
    if principal is None:
        raise Refused("no principal: only a bound chat user may do this")
    doc = await ChatBinding.get(binding_id(principal.provider, principal.user_id))
    if doc is None:
        raise Refused(f"{principal.provider} user {principal.user_id} is not bound to a Nexus identity")
    if not allows(Role(doc.role), capability):
        raise Refused(f"{doc.identity} is a {doc.role} and may not {capability.value.replace('_', ' ')}")
    return doc


def actor(binding: ChatBinding, principal: ChatPrincipal) -> Principal:
    """The audit log's actor for a chat act: the bound identity, and the chat user it came from."""
    who = f"@{principal.username} " if principal.username else ""
    return Principal(
        key_id=binding.identity,
        name=f"{binding.identity} via {principal.provider} {who}({principal.user_id})",
        role=Role(binding.role),
    )


def refusal(exc: Refused) -> DomainError:
    return DomainError(403, str(exc), field="principal")

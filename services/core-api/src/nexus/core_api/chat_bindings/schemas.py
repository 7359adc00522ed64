from typing import Annotated, Literal

import msgspec

from nexus.core_api.schemas import Body, Out, iso
from nexus.db.documents import ChatBinding

ChatUserId = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,20}$", description="the chat user's numeric id")]
Identity = Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="the Nexus identity (name or email)")]


class ChatBindingCreate(Body):
    user_id: ChatUserId
    identity: Identity
    role: Literal["lead", "viewer"]
    provider: Literal["telegram"] = "telegram"


class ChatBindingOut(Out):
    id: str
    provider: str
    user_id: str
    identity: str
    role: str
    created_by: str
    created_at: str
    updated_at: str


def to_out(b: ChatBinding) -> ChatBindingOut:
    return ChatBindingOut(
        id=b.id,
        provider=b.provider,
        user_id=b.user_id,
        identity=b.identity,
        role=b.role,
        created_by=b.created_by,
        created_at=iso(b.created_at),
        updated_at=iso(b.updated_at),
    )

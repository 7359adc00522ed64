from typing import Annotated, Literal

import msgspec

from nexus.core_api.schemas import Body, Out

Scope = Literal["agent", "repo", "global"]
Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
Tag = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._:-]{0,62}$", description="lowercase tag")]
Tags = Annotated[list[Tag], msgspec.Meta(max_length=32)]
Content = Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
Source = Annotated[str, msgspec.Meta(max_length=500)]
# Seconds until the item stops being handed to runs; 0 on update removes the expiry.
Ttl = Annotated[int, msgspec.Meta(ge=0, le=10 * 365 * 86400)]


class MemoryCreate(Body):
    scope: Scope
    content: Content
    scope_id: Ref | None = None  # the agent or repository (id or name); none for global items
    tags: Tags = msgspec.field(default_factory=list)
    source: Source = ""
    ttl_s: Ttl | None = None


class MemoryUpdate(Body):
    content: Content | None = None
    tags: Tags | None = None
    source: Source | None = None
    ttl_s: Ttl | None = None


class MemoryOut(Out):
    id: str
    scope: str
    scope_id: str | None
    content: str
    tags: list[str]
    source: str
    expires_at: str | None
    created_at: str


class MemoryPreviewOut(Out):
    """What a run of this agent would be given for `query`, in the order it would get it."""

    agent_id: str
    agent_revision: int
    repository_id: str | None
    query: str
    items: list[MemoryOut]
    total_chars: int

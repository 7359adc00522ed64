from typing import Literal

from nexus.core_api.schemas import Body, Name, Out, iso
from nexus.db.documents import ApiKey


class KeyCreate(Body):
    name: Name
    # Runner tokens are minted per run (POST /v1/runs/{run_id}/token), never here.
    role: Literal["admin", "lead", "viewer"]


class KeyOut(Out):
    """A key as it is listed: never its hash, never the key itself."""

    id: str
    name: str
    role: str
    prefix: str
    run_id: str | None
    revoked: bool
    created_by: str
    created_at: str
    last_used_at: str | None


class KeyCreated(KeyOut):
    key: str  # shown in this response only; stored as a hash


def to_out(k: ApiKey) -> KeyOut:
    return KeyOut(
        id=k.id,
        name=k.name,
        role=k.role,
        prefix=k.prefix,
        run_id=k.run_id,
        revoked=k.revoked,
        created_by=k.created_by,
        created_at=iso(k.created_at),
        last_used_at=iso(k.last_used_at),
    )


def created_out(k: ApiKey, raw: str) -> KeyCreated:
    out = to_out(k)
    return KeyCreated(**{f: getattr(out, f) for f in KeyOut.__struct_fields__}, key=raw)

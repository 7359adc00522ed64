"""Shared request-body conventions: unknown fields are rejected; names are slugs."""

from datetime import datetime
from typing import Annotated, overload

import msgspec

from nexus.domain.limits import ShortText as ShortText, Text as Text  # the same limits as commands over the bus

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="lowercase slug")]
# What `${secret:NAME}` can reference in a command (the hypervisor's pattern).
SecretName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", description="secret name")]


class Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Out(msgspec.Struct, kw_only=True):
    pass


@overload
def iso(dt: datetime) -> str: ...
@overload
def iso(dt: datetime | None) -> str | None: ...
def iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None

"""Settings objects are msgspec Structs filled from `NEXUS_`-prefixed variables of a mapping.

Each service calls `load_settings(TheirSettings, os.environ)` once in its `main()`."""

from collections.abc import Mapping
from typing import TypeVar

import msgspec

T = TypeVar("T", bound=msgspec.Struct)


def load_settings(cls: type[T], environ: Mapping[str, str], prefix: str = "NEXUS_") -> T:
    values: dict[str, object] = {}
    for name in cls.__struct_fields__:
        raw = environ.get(prefix + name.upper())
        if raw is not None and raw != "":
            values[name] = raw
    try:
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise SystemExit(f"invalid settings: {exc} (from {prefix}* environment variables)") from exc

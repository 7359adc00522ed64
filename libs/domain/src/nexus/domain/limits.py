"""Field and size limits shared by every way in: the HTTP API and commands over the bus check the
same ones, so a value refused over HTTP is refused over NATS too."""

import functools
import re
from collections.abc import Hashable
from typing import Annotated, Any, TypeVar, cast

import msgspec

# The largest message or request body accepted (core-api's default max_body_bytes; NATS's max_payload).
MAX_BODY_BYTES = 1_048_576
Text = Annotated[str, msgspec.Meta(max_length=200_000)]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
# An id or a name someone refers to (agent, approval, session, run).
Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
Who = Annotated[str, msgspec.Meta(max_length=200)]


# What no store can keep, wherever it comes in: a NUL character (PostgreSQL's text and jsonb refuse it)
# and an integer past 64 bits (BSON's widest). Looked for in the raw JSON first, which costs a scan; only
# a body that may hold one is decoded again to name the field.
NUL_MESSAGE = "a NUL character cannot be stored"
INT64_MESSAGE = "an integer outside the signed 64-bit range cannot be stored"
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
# The escape's letters alone, looked for first: a literal search is ~60 times faster than the pattern above
# (which tries every position), and only a body holding them can hold a NUL (~30 µs a KiB saved per body).
_NUL_LETTERS = re.compile(rb"\\u0000")
_LONG_DIGITS = re.compile(rb"\d{19}")
_INT64 = range(-(2**63), 2**63)


def storable(text: str) -> str:
    """A runner's text as a document can keep it: a NUL becomes U+FFFD (a run's own events may carry one:
    what a model wrote, what a command printed; the run must still end as its runner reported)."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def unstorable(body: bytes, *, nul: bool = True) -> tuple[str, str] | None:
    """(the dotted path of the first field, why) for a JSON body holding what no store can keep, or None
    (also for a body that is not JSON: its own decoder says so). `nul=False`: integers only."""
    if not ((nul and _NUL_LETTERS.search(body) and _ESCAPED_NUL.search(body)) or _LONG_DIGITS.search(body)):
        return None
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    return _unstorable_in(value, "", nul)


def _unstorable_in(value: Any, path: str, nul: bool) -> tuple[str, str] | None:
    if isinstance(value, str):
        return (path, NUL_MESSAGE) if nul and "\x00" in value else None
    if isinstance(value, int) and not isinstance(value, bool):
        return (path, INT64_MESSAGE) if value not in _INT64 else None
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            if nul and "\x00" in str(k):
                return here, NUL_MESSAGE
            items.append((here, v))
    elif isinstance(value, list):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    for here, v in items:
        if (found := _unstorable_in(v, here, nul)) is not None:
            return found
    return None


T = TypeVar("T")


def within_bounds(data: Any, type_: type[T]) -> T:
    """Stored data read as `type_` though written before one of its ranges existed: a number past a bound
    is read as that bound, a list past its length as its first items. What an older version stored keeps
    loading (a read never fails on it), and a run of it gets the nearest value the range allows.
    Data that fits costs one conversion; only data that does not is walked."""
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError:
        return msgspec.convert(_within(data, _info(cast(Hashable, type_))), type_)


@functools.cache
def _info(type_: Hashable) -> msgspec.inspect.Type:
    return msgspec.inspect.type_info(type_)


def _within(value: Any, t: msgspec.inspect.Type) -> Any:
    if isinstance(t, msgspec.inspect.Metadata):
        return _within(value, t.type)
    if isinstance(t, msgspec.inspect.UnionType):
        for member in t.types:
            value = _within(value, member)
        return value
    if isinstance(t, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        return _clamp(value, t)
    if isinstance(t, msgspec.inspect.StructType) and isinstance(value, dict):
        fields = {f.encode_name: f.type for f in t.fields}
        return {k: _within(v, fields[k]) if k in fields else v for k, v in value.items()}
    if isinstance(t, msgspec.inspect.ListType) and isinstance(value, list):
        return [_within(v, t.item_type) for v in value[: t.max_length]]
    if isinstance(t, msgspec.inspect.DictType) and isinstance(value, dict):
        return {k: _within(v, t.value_type) for k, v in value.items()}
    return value


def _clamp(value: Any, t: msgspec.inspect.IntType | msgspec.inspect.FloatType) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(t, msgspec.inspect.IntType) and not isinstance(value, int):
        return value  # a float where an integer belongs is a different fault: its own error says so
    if t.ge is not None and not value >= t.ge:  # `not >=`: NaN is past every bound
        value = t.ge
    if t.le is not None and not value <= t.le:
        value = t.le
    return value

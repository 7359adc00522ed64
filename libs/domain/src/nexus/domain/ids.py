"""Identifiers: a type prefix and a ULID, so ids sort by creation time and say what they name."""

import hashlib

from ulid import ULID

CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"  # a ULID's alphabet, lower case


def new_id(prefix: str) -> str:
    return f"{prefix}_{str(ULID()).lower()}"


def new_ulid() -> str:
    return str(ULID())


def derived_id(prefix: str, parent: str, *parts: str) -> str:
    """An id named by what it is rather than when: the same parent and parts always give the same id
    (a retried attempt that plans the same child again names the same child). It takes its parent's
    time part, so it sorts with its parent, and 80 bits of a digest of the parts after it."""
    return f"{prefix}_{derived_ulid(parent, *parts).lower()}"


def derived_ulid(parent: str, *parts: str) -> str:
    """A ULID named by what it stands for (as `derived_id`): an event announced again after a crash
    carries the id of its first announcement, so JetStream and every consumer take it once."""
    digest = int.from_bytes(hashlib.sha256("\0".join((parent, *parts)).encode()).digest()[:10], "big")
    tail = "".join(CROCKFORD[(digest >> (5 * i)) & 31] for i in reversed(range(16)))
    return f"{parent.rsplit('_', 1)[-1][:10]}{tail}".upper()

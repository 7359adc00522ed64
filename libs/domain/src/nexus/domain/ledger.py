"""The tamper-evident ledger of a session: each change carries the hash of the one before it.

hash_i = sha256(prev_hash_i + canonical JSON of change_i without its `prevHash`/`hash` fields),
prev_hash_0 = "", and `seq` is the change's index in the session (0-based), so deleting,
inserting, reordering or editing any change breaks the chain at that change's index.
Canonical JSON = the change's wire form (camelCase, `type` tag, every field) with sorted keys."""

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from nexus.domain.sessions import SessionChange

_HASH_FIELDS = ("prevHash", "hash")


class VerifyResult(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    # Index of the first change that does not verify (None when the chain holds).
    broken_at: int | None
    # Hash of the last change that verified ("" when none did): the run's ledger hash when ok.
    final_hash: str


def _as_change(change: Any) -> Any:
    """Stored changes may come back as wire dicts; decode them so defaults hash the same."""
    if isinstance(change, Mapping):
        return msgspec.convert(dict(change), type=SessionChange)
    return change


def canonical(change: Any) -> bytes:
    wire = msgspec.to_builtins(_as_change(change))
    for field in _HASH_FIELDS:
        wire.pop(field, None)
    return msgspec.json.encode(wire, order="sorted")


def change_hash(prev_hash: str, change: Any) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(change)).hexdigest()


def seal_one(change: Any, *, seq: int, prev_hash: str) -> Any:
    """A copy of `change` placed at `seq` after a change whose hash is `prev_hash`."""
    placed = msgspec.structs.replace(_as_change(change), seq=seq, prev_hash=prev_hash, hash="")
    return msgspec.structs.replace(placed, hash=change_hash(prev_hash, placed))


def seal(changes: Iterable[Any]) -> list[SessionChange]:
    """Copies of `changes` with seq/prev_hash/hash filled, as one chain from the start."""
    sealed: list[SessionChange] = []
    prev = ""
    for seq, change in enumerate(changes):
        sealed.append(seal_one(change, seq=seq, prev_hash=prev))
        prev = sealed[-1].hash
    return sealed


def verify_chain(changes: Iterable[Any]) -> VerifyResult:
    prev = ""
    for index, raw in enumerate(changes):
        try:
            change = _as_change(raw)
        except msgspec.ValidationError:
            return VerifyResult(ok=False, broken_at=index, final_hash=prev)
        if change.seq != index or change.prev_hash != prev or change.hash != change_hash(prev, change):
            return VerifyResult(ok=False, broken_at=index, final_hash=prev)
        prev = change.hash
    return VerifyResult(ok=True, broken_at=None, final_hash=prev)

"""The session ledger: sealing makes a hash chain; tampering with any field of any change,
or deleting, inserting or reordering changes, breaks verification at that change's index."""

import msgspec
import pytest

from nexus.domain.ledger import VerifyResult, change_hash, seal, verify_chain
from nexus.domain.sessions import (
    ApprovalChange,
    ChildSessionChange,
    CommandRunChange,
    FileReadChange,
    FileWriteChange,
    GitCommitChange,
    NoteChange,
    RefusedChange,
    SessionChange,
)

T = "2026-01-01T00:00:00.000Z"


def _changes() -> list:
    return [
        NoteChange(message="plan", timestamp=T),
        FileWriteChange(rel_path="a.txt", bytes=3, sha256="ab" * 32, timestamp=T),
        CommandRunChange(cmd="pytest -q", exit_code=0, duration_ms=12, timestamp=T),
        FileReadChange(rel_path="a.txt", timestamp=T),
        RefusedChange(tool="read_file", reason="path-escape", detail="../x", timestamp=T),
        ApprovalChange(action="merge", decision="approved", timestamp=T),
        ChildSessionChange(child_session_id="ses_c", task_id="tsk_c", timestamp=T),
        GitCommitChange(sha="f" * 40, branch="nexus/t/r", message="m", timestamp=T),
    ]


def test_seal_builds_a_chain_that_verifies() -> None:
    sealed = seal(_changes())
    assert [c.seq for c in sealed] == list(range(8))
    assert sealed[0].prev_hash == ""
    assert all(sealed[i].prev_hash == sealed[i - 1].hash for i in range(1, 8))
    assert len({c.hash for c in sealed}) == 8
    assert verify_chain(sealed) == VerifyResult(ok=True, broken_at=None, final_hash=sealed[-1].hash)


def test_seal_does_not_mutate_its_input() -> None:
    changes = _changes()
    seal(changes)
    assert all(c.hash == "" for c in changes)


def test_empty_chain() -> None:
    assert verify_chain([]) == VerifyResult(ok=True, broken_at=None, final_hash="")


def test_hash_is_sha256_of_prev_and_sorted_canonical_json() -> None:
    import hashlib

    change = NoteChange(message="x", timestamp=T, seq=0)
    wire = msgspec.to_builtins(change)
    del wire["prevHash"], wire["hash"]
    expected = hashlib.sha256(b"prev" + msgspec.json.encode(wire, order="sorted")).hexdigest()
    assert change_hash("prev", change) == expected
    # The hash fields themselves are not hashed.
    assert change_hash("prev", msgspec.structs.replace(change, hash="zz", prev_hash="yy")) == expected


def _tamper_cases() -> list[tuple[int, str, object]]:
    cases = []
    for index, change in enumerate(seal(_changes())):
        for field in change.__struct_fields__:
            value = getattr(change, field)
            if isinstance(value, bool):
                new = not value
            elif isinstance(value, int):
                new = value + 1
            elif field == "decision":
                new = "rejected"
            elif isinstance(value, str):
                new = value + "!"
            else:
                continue
            cases.append((index, field, new))
    return cases


@pytest.mark.parametrize(("index", "field", "value"), _tamper_cases(), ids=lambda v: str(v)[:20])
def test_tampering_any_field_breaks_the_chain_at_that_index(index: int, field: str, value: object) -> None:
    sealed = seal(_changes())
    sealed[index] = msgspec.structs.replace(sealed[index], **{field: value})
    result = verify_chain(sealed)
    assert not result.ok
    assert result.broken_at == index
    assert result.final_hash == (sealed[index - 1].hash if index else "")


def test_tampering_and_resealing_one_change_still_breaks_the_next() -> None:
    sealed = seal(_changes())
    forged = msgspec.structs.replace(sealed[2], exit_code=0, cmd="rm -rf /", hash="")
    sealed[2] = msgspec.structs.replace(forged, hash=change_hash(forged.prev_hash, forged))
    assert verify_chain(sealed).broken_at == 3


@pytest.mark.parametrize(
    ("edit", "broken_at"),
    [
        (lambda c: c.pop(3), 3),  # deleted
        (lambda c: c.insert(2, c[5]), 2),  # duplicated
        (lambda c: c.__setitem__(slice(4, 6), [c[5], c[4]]), 4),  # reordered
        (lambda c: c.pop(), None),  # truncated at the end: still a valid (shorter) chain
    ],
    ids=["delete", "insert", "reorder", "truncate-tail"],
)
def test_structural_tampering(edit: object, broken_at: int | None) -> None:
    sealed = seal(_changes())
    edit(sealed)  # type: ignore[operator]  # each param is a callable
    result = verify_chain(sealed)
    assert result.broken_at == broken_at
    if broken_at is None:
        # Dropping the tail is caught by comparing final_hash with the hash in the commit trailer.
        assert result.final_hash != seal(_changes())[-1].hash


def test_wire_dicts_from_storage_verify_too() -> None:
    sealed = seal(_changes())
    stored = msgspec.json.decode(msgspec.json.encode(sealed))  # plain dicts, camelCase keys
    assert verify_chain(stored).ok
    stored[1]["relPath"] = "b.txt"
    assert verify_chain(stored).broken_at == 1
    stored[1] = {"type": "no-such-kind"}
    assert verify_chain(stored).broken_at == 1


def test_decoded_session_changes_verify() -> None:
    sealed = seal(_changes())
    decoded = msgspec.json.decode(msgspec.json.encode(sealed), type=list[SessionChange])
    assert verify_chain(decoded).ok

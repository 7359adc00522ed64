from typing import Any

import msgspec

from nexus.core_api.schemas import iso
from nexus.db.documents import Session, SessionChangeRecord
from nexus.domain.json_types import JsonObject
from nexus.domain.ledger import verify_chain


class AttemptChain(msgspec.Struct, rename="camel", kw_only=True):
    """One attempt's own record of the session: its changes form a chain that verifies on its own."""

    attempt: int
    notes: list[str]
    changes: list[dict[str, Any]]
    ledger_hash: str
    verified: bool


class SessionOut(msgspec.Struct, rename="camel", kw_only=True):
    """The session contract: sessionId, parentSessionId, backend, status, notes, changes
    (those of the latest attempt), and every attempt's chain apart; `sandbox`: what confines its
    commands (bwrap, landlock or none; empty until its run opened it)."""

    session_id: str
    run_id: str
    project_path: str
    parent_session_id: str | None
    backend: str
    status: str
    notes: list[str]
    changes: list[dict[str, Any]]
    created_at: str
    updated_at: str
    attempt: int = 1
    attempts: list[AttemptChain] = msgspec.field(default_factory=list)
    sandbox: str = ""


Chains = dict[str, dict[int, list[JsonObject]]]  # session id → attempt → change records in seq order


async def load_chains(sessions: list[Session]) -> Chains:
    """Every attempt's changes of these sessions, in one query."""
    ids = [s.id for s in sessions]
    out: Chains = {}
    if not ids:
        return out
    coll = SessionChangeRecord.get_pymongo_collection()
    for sid in dict.fromkeys(ids):  # one equality each, not $in: FerretDB answers equality from an index
        async for rec in coll.find({"session_id": sid}):
            out.setdefault(rec["session_id"], {}).setdefault(int(rec["attempt"]), []).append(rec)
    for by_attempt in out.values():
        for recs in by_attempt.values():
            recs.sort(key=lambda r: r["seq"])
    return out


def _chain(attempt: int, recs: list[JsonObject]) -> AttemptChain:
    changes = [r["change"] for r in recs]
    result = verify_chain(changes)
    return AttemptChain(
        attempt=attempt,
        notes=[r["note"] for r in recs if r.get("note") is not None],
        changes=changes,
        ledger_hash=result.final_hash,
        verified=result.ok,
    )


def to_out(s: Session, chains: Chains | None = None) -> SessionOut:
    by_attempt = (chains or {}).get(s.id, {})
    attempts = [_chain(n, recs) for n, recs in sorted(by_attempt.items())]
    latest = next((a for a in attempts if a.attempt == s.attempt), attempts[-1] if attempts else None)
    if latest is not None:
        notes, changes = latest.notes, latest.changes
    else:  # stored before changes were kept per attempt
        notes, changes = s.notes, sorted(s.changes, key=lambda c: c.get("seq", 0))
    return SessionOut(
        session_id=s.id,
        run_id=s.run_id,
        project_path=s.project_path,
        parent_session_id=s.parent_session_id,
        backend=s.backend,
        status=s.status,
        notes=notes,
        changes=changes,
        created_at=iso(s.created_at),
        updated_at=iso(s.updated_at),
        attempt=s.attempt,
        attempts=attempts,
        sandbox=s.sandbox,
    )


async def outs(sessions: list[Session]) -> list[SessionOut]:
    chains = await load_chains(sessions)
    return [to_out(s, chains) for s in sessions]

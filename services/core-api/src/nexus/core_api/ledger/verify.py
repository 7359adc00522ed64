"""Verify a run's ledger against core-api's record of what the run reported, entry by entry."""

import msgspec

from nexus.core_api.ledger.record import records_of
from nexus.core_api.sessions.schemas import load_chains
from nexus.db.documents import Run, Session
from nexus.domain.json_types import JsonObject
from nexus.domain.ledger import verify_chain


class SessionVerdict(msgspec.Struct, kw_only=True):
    session_id: str
    changes: int  # stored
    recorded: int  # entries core-api recorded as they arrived
    chain_ok: bool
    final_hash: str
    problems: list[str]


class LedgerVerdict(msgspec.Struct, kw_only=True):
    run_id: str
    ok: bool
    ledger_hash: str  # as the run reported it
    recorded_hash: str  # the last entry core-api recorded for the run's own session
    sessions: list[SessionVerdict]
    problems: list[str]


def _latest_attempt(records: list[JsonObject]) -> dict[str, list[JsonObject]]:
    """session → its records of the latest attempt that recorded anything for it, in seq order."""
    latest: dict[str, int] = {}
    for r in records:
        latest[r["session_id"]] = max(latest.get(r["session_id"], 0), r["attempt"])
    out: dict[str, list[JsonObject]] = {}
    for r in records:
        if r["attempt"] == latest[r["session_id"]]:
            out.setdefault(r["session_id"], []).append(r)
    return out


def check_session(session_id: str, changes: list[JsonObject], recorded: list[JsonObject]) -> SessionVerdict:
    chain = verify_chain(changes)
    problems: list[str] = []
    if not chain.ok:
        problems.append(f"the stored chain breaks at change {chain.broken_at}")
    stored = {c.get("seq"): c.get("hash") for c in changes if isinstance(c, dict)}
    for r in recorded:
        if r.get("conflicts"):
            problems.append(f"entry {r['seq']} was reported again with a different hash")
        if r["seq"] not in stored:
            problems.append(f"entry {r['seq']} was recorded as it arrived but is missing from the ledger (truncated)")
        elif stored[r["seq"]] != r["hash"]:
            problems.append(
                f"entry {r['seq']} hashes to {str(stored[r['seq']])[:16]}… but arrived as {r['hash'][:16]}… "
                "(re-sealed or edited after it was reported)"
            )
    unrecorded = sorted(set(stored) - {r["seq"] for r in recorded}, key=lambda s: (not isinstance(s, int), s))
    if unrecorded:
        problems.append(f"entries {unrecorded[:10]} are in the ledger but were never reported as they happened")
    return SessionVerdict(
        session_id=session_id,
        changes=len(changes),
        recorded=len(recorded),
        chain_ok=chain.ok,
        final_hash=chain.final_hash,
        problems=problems,
    )


def _stored(chains: JsonObject, session: Session, recorded: list[JsonObject]) -> list[JsonObject]:
    """The stored ledger of the attempt core-api recorded (or the session's latest, when none was)."""
    by_attempt = chains.get(session.id, {})
    attempt = recorded[0]["attempt"] if recorded else max(by_attempt, default=session.attempt)
    return [r["change"] for r in by_attempt.get(attempt, [])]


async def verify_run(run: Run) -> LedgerVerdict:
    sessions = await Session.find({"run_id": run.id}).sort("+created_at").to_list()
    by_session = _latest_attempt(await records_of(run.id))
    chains = await load_chains(sessions)  # the stored changes, per session and attempt
    verdicts = [
        check_session(s.id, _stored(chains, s, by_session.get(s.id, [])), by_session.get(s.id, [])) for s in sessions
    ]
    problems: list[str] = []
    own = by_session.get(run.session_id, [])
    recorded_hash = own[-1]["hash"] if own else ""
    if run.ledger_hash and run.ledger_hash != recorded_hash:
        problems.append(
            f"the run reported ledger hash {run.ledger_hash[:16]}… but the last entry recorded as it "
            f"arrived is {recorded_hash[:16] or 'none'}…"
        )
    if run.session_id not in {s.id for s in sessions}:
        problems.append(f"the run's session {run.session_id} was not found")
    ok = not problems and all(not v.problems for v in verdicts)
    return LedgerVerdict(
        run_id=run.id,
        ok=ok,
        ledger_hash=run.ledger_hash,
        recorded_hash=recorded_hash,
        sessions=verdicts,
        problems=problems,
    )

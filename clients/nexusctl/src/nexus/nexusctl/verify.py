"""`runs verify`: recompute every session's hash chain from its changes (nexus.domain.ledger) and
check that the run's own session ends on the ledger hash the runner reported."""

from dataclasses import dataclass, field

import msgspec

from nexus.domain.json_types import JsonObject
from nexus.domain.ledger import change_hash, verify_chain


@dataclass(frozen=True)
class SessionCheck:
    session_id: str
    changes: int
    ok: bool
    final_hash: str
    broken_at: int | None = None
    why: str = ""


@dataclass
class RunCheck:
    run_id: str
    ledger_hash: str
    own_session: str
    sessions: list[SessionCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.ok for s in self.sessions)


def explain(changes: list[JsonObject], index: int) -> str:
    """Why change `index` breaks the chain, in words."""
    raw = changes[index]
    if not isinstance(raw, dict):
        return "the change is not an object"
    prev = changes[index - 1].get("hash", "") if index > 0 and isinstance(changes[index - 1], dict) else ""
    if raw.get("seq") != index:
        return f"seq is {raw.get('seq')!r}, expected {index} (a change was removed, inserted or reordered)"
    if raw.get("prevHash", "") != prev:
        return "prevHash does not match the previous change's hash (the chain was cut or reordered)"
    try:
        expected = change_hash(prev, raw)
    except (msgspec.ValidationError, TypeError) as exc:
        return f"the change does not decode: {exc}"
    if raw.get("hash") != expected:
        return f"its content does not hash to its recorded hash (edited after it was sealed; expected {expected[:16]}…)"
    return "unknown"


def check_session(session: JsonObject) -> SessionCheck:
    sid = str(session.get("sessionId") or session.get("session_id") or "?")
    changes = list(session.get("changes") or [])
    result = verify_chain(changes)
    why = explain(changes, result.broken_at) if result.broken_at is not None else ""
    return SessionCheck(sid, len(changes), result.ok, result.final_hash, result.broken_at, why)


def check_run(run: JsonObject, sessions: list[JsonObject]) -> RunCheck:
    own = str(run.get("session_id") or "")
    check = RunCheck(run_id=str(run.get("id")), ledger_hash=str(run.get("ledger_hash") or ""), own_session=own)
    check.sessions = [check_session(s) for s in sessions]
    mine = next((s for s in check.sessions if s.session_id == own), None)
    if mine is None:
        check.problems.append(f"the run's session {own} was not found")
    elif not check.ledger_hash:
        check.problems.append(f"the run reported no ledger hash (status {run.get('status')}); nothing to compare")
    elif mine.ok and mine.final_hash != check.ledger_hash:
        check.problems.append(
            f"session {own} ends on {mine.final_hash[:16]}… but the run reported {check.ledger_hash[:16]}… "
            "(changes were added or removed at the end)"
        )
    return check


def report(check: RunCheck) -> list[str]:
    lines = []
    for s in check.sessions:
        mark = "ok    " if s.ok else "BROKEN"
        own = " (the run's own session)" if s.session_id == check.own_session else ""
        lines.append(f"{mark} session {s.session_id}{own}: {s.changes} changes, final hash {s.final_hash[:16] or '-'}")
        if not s.ok:
            lines.append(f"       breaks at change {s.broken_at}: {s.why}")
    lines += [f"PROBLEM {p}" for p in check.problems]
    verdict = "holds" if check.ok else "is BROKEN"
    lines.append(
        f"ledger of run {check.run_id} {verdict}" + (f" (ledger hash {check.ledger_hash})" if check.ok else "")
    )
    return lines


def add_record(check: RunCheck, verdict: JsonObject) -> None:
    """Fold in core-api's check against the hashes it recorded as the run reported them
    (`GET /v1/runs/{id}/verify`): what a truncated or re-sealed ledger cannot hide."""
    check.problems += [f"record: {p}" for p in verdict.get("problems") or []]
    for s in verdict.get("sessions") or []:
        check.problems += [f"record: session {s.get('session_id')}: {p}" for p in s.get("problems") or []]

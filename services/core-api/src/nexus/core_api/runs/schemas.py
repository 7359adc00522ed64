from typing import Any

from nexus.core_api.schemas import Body, Out, iso
from nexus.core_api.sessions.schemas import SessionOut
from nexus.db.documents import Run
from nexus.domain.json_types import JsonObject
from nexus.domain.run_facts import attempt_status


class AttemptOut(Out):
    n: int
    status: str
    reason: str
    runtime: str | None = None
    started_at: str | None = None
    ended_at: str | None = None


class RunOut(Out):
    id: str
    task_id: str
    agent_id: str
    agent_revision: int
    goal_id: str | None
    status: str
    attempt: int
    max_attempts: int
    attempts: list[AttemptOut]
    reason: str
    summary: str
    branch: str
    commit_sha: str
    ledger_hash: str
    usage: dict[str, Any]
    session_id: str
    parent_session_id: str | None
    parent_run_id: str | None
    created_at: str
    started_at: str | None
    ended_at: str | None
    config: dict[str, Any] | None = None
    sessions: list[SessionOut] | None = None


class RunAction(Body):
    reason: str = ""


def _attempt(a: JsonObject) -> AttemptOut:
    return AttemptOut(
        n=a.get("n", 0),
        status=attempt_status(a),
        reason=a.get("reason", ""),
        runtime=a.get("runtime"),
        started_at=iso(a.get("started_at")),
        ended_at=iso(a.get("ended_at")),
    )


def to_out(r: Run, sessions: list[SessionOut] | None = None, config: JsonObject | None = None) -> RunOut:
    """The run as the API shows it; `config` (its own document, nexus.db.run_configs) only for one run."""
    return RunOut(
        id=r.id,
        task_id=r.task_id,
        agent_id=r.agent_id,
        agent_revision=r.agent_revision,
        goal_id=r.goal_id,
        status=r.status,
        attempt=r.attempt,
        max_attempts=r.max_attempts,
        attempts=[_attempt(a) for a in r.attempts],
        reason=r.reason,
        summary=r.summary,
        branch=r.branch,
        commit_sha=r.commit_sha,
        ledger_hash=r.ledger_hash,
        usage=r.usage,
        session_id=r.session_id,
        parent_session_id=r.parent_session_id,
        parent_run_id=r.parent_run_id,
        created_at=iso(r.created_at),
        started_at=iso(r.started_at),
        ended_at=iso(r.ended_at),
        config=config,
        sessions=sessions,
    )

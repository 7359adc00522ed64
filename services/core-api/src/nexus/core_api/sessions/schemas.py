from typing import Any

import msgspec

from nexus.core_api.schemas import iso
from nexus.db.documents import Session


class SessionOut(msgspec.Struct, rename="camel", kw_only=True):
    """Seed 004's SessionState contract: sessionId, parentSessionId, backend, status, notes, changes."""

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


def to_out(s: Session) -> SessionOut:
    return SessionOut(
        session_id=s.id, run_id=s.run_id, project_path=s.project_path, parent_session_id=s.parent_session_id,
        backend=s.backend, status=s.status, notes=s.notes, changes=sorted(s.changes, key=lambda c: c.get("seq", 0)),
        created_at=iso(s.created_at), updated_at=iso(s.updated_at),
    )

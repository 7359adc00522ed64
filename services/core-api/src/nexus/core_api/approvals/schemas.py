from typing import Annotated

import msgspec

from nexus.core_api.schemas import Body, Out, iso
from nexus.db.documents import Approval

Reason = Annotated[str, msgspec.Meta(max_length=2000)]


class ApprovalDecision(Body):
    reason: Reason = ""


class ApprovalOut(Out):
    id: str
    run_id: str
    session_id: str
    action: str
    detail: str
    status: str  # pending | approved | rejected | expired
    reason: str
    decided_by: str
    expires_at: str | None
    created_at: str
    decided_at: str | None


def to_out(a: Approval) -> ApprovalOut:
    return ApprovalOut(
        id=a.id,
        run_id=a.run_id,
        session_id=a.session_id,
        action=a.action,
        detail=a.detail,
        status=a.status,
        reason=a.reason,
        decided_by=a.decided_by,
        expires_at=iso(a.expires_at),
        created_at=iso(a.created_at),
        decided_at=iso(a.decided_at),
    )

from nexus.core_api.schemas import Out, iso
from nexus.db.documents import AuditEntry


class AuditEntryOut(Out):
    id: str
    actor: str  # the api key id, or "system"
    actor_name: str
    action: str
    resource: str
    before_id: str | None
    after_id: str | None
    at: str


def to_out(e: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(
        id=e.id,
        actor=e.actor,
        actor_name=e.actor_name,
        action=e.action,
        resource=e.resource,
        before_id=e.before_id,
        after_id=e.after_id,
        at=iso(e.at),
    )

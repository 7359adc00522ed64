"""Every mutation writes an audit entry: who, what, when, before/after ids."""

from nexus.core_api.auth.keys import Principal
from nexus.db.audit import insert_audit_entry
from nexus.domain.ids import new_id


async def record(
    actor: Principal | None, action: str, resource: str, *, before_id: str | None = None, after_id: str | None = None
) -> None:
    # Stored before the request answers, in one insert with the entries concurrent requests write.
    await insert_audit_entry(
        new_id("aud"),
        actor=actor.key_id if actor else "system",
        actor_name=actor.name if actor else "system",
        action=action,
        resource=resource,
        before_id=before_id,
        after_id=after_id,
    )

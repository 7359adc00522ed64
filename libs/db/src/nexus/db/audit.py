"""An audit entry as stored, made at the repository boundary without the `AuditEntry` model.

Every mutation writes one before its request answers. Building the beanie model (pydantic's validation)
and encoding it back (beanie's encoder) is work for nothing on a document whose fields are plain strings
and a time (docs/throughput.md); `tests/db/test_audit.py` holds it equal to what the model stores."""

from typing import Any

from nexus.db.documents import AuditEntry, now
from nexus.db.group import insert_grouped_raw
from nexus.db.paging import allocate


async def insert_audit_entry(
    entry_id: str,
    *,
    actor: str,
    actor_name: str,
    action: str,
    resource: str,
    before_id: str | None = None,
    after_id: str | None = None,
) -> None:
    """Stored with the entries concurrent callers write (one insert per batch)."""
    raw: dict[str, Any] = {
        "_id": entry_id,
        "page": await allocate(AuditEntry),
        "actor": actor,
        "actor_name": actor_name,
        "action": action,
        "resource": resource,
        "before_id": before_id,
        "after_id": after_id,
        "at": now(),
    }
    await insert_grouped_raw(AuditEntry, raw)

"""A mutation's audit entry is written without building the `AuditEntry` model (hot on every request)."""

import pytest

from nexus.core_api.audit.service import record
from nexus.db.documents import AuditEntry

pytestmark = pytest.mark.infra


async def test_record_stores_the_entry_without_the_model(fresh_db, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the AuditEntry model was built")

    monkeypatch.setattr(AuditEntry, "__init__", refuse)
    await record(None, "task.create", "tasks/t9", after_id="t9")
    monkeypatch.undo()
    [entry] = await AuditEntry.find({"resource": "tasks/t9"}).to_list()
    assert (entry.actor, entry.actor_name, entry.action, entry.after_id) == ("system", "system", "task.create", "t9")
    assert entry.page is not None  # its bucket taken, as the model's insert takes it

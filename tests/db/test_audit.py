"""An audit entry made at the repository boundary is stored as the `AuditEntry` model would store it,
without building the model (every mutation writes one: its validation and encoding were hot)."""

import asyncio

import pytest
from beanie.odm.utils.dump import get_dict

from nexus.db.audit import insert_audit_entry
from nexus.db.documents import AuditEntry

pytestmark = pytest.mark.infra


async def test_the_entry_is_stored_as_the_model_stores_it(fresh_db) -> None:
    await insert_audit_entry(
        "aud_raw", actor="key_1", actor_name="admin", action="task.create", resource="tasks/t1", after_id="t1"
    )
    model = AuditEntry(
        id="aud_model", actor="key_1", actor_name="admin", action="task.create", resource="tasks/t1", after_id="t1"
    )
    await model.insert()  # beanie's own path
    coll = AuditEntry.get_pymongo_collection()
    raw, by_model = await coll.find_one({"_id": "aud_raw"}), await coll.find_one({"_id": "aud_model"})
    assert set(raw) == set(by_model) == set(get_dict(model, to_db=True))  # no field missing or extra
    assert {k: v for k, v in raw.items() if k not in ("_id", "at")} == {
        k: v for k, v in by_model.items() if k not in ("_id", "at")
    }  # the same bucket and values
    assert type(raw["at"]) is type(by_model["at"]) and raw["at"].tzinfo is not None
    read = await AuditEntry.get("aud_raw")  # and the model reads it back
    assert (read.actor, read.action, read.after_id, read.before_id) == ("key_1", "task.create", "t1", None)


async def test_no_model_is_built_and_concurrent_entries_share_inserts(
    fresh_db, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the AuditEntry model was built")

    monkeypatch.setattr(AuditEntry, "__init__", refuse)
    await asyncio.gather(
        *(insert_audit_entry(f"aud_{i}", actor="k", actor_name="n", action="a", resource=f"r/{i}") for i in range(20))
    )
    assert await AuditEntry.get_pymongo_collection().count_documents({"_id": {"$regex": "^aud_[0-9]+$"}}) == 20

"""Sessions as core-api stores them: opened by the runner, changes appended once each."""

import msgspec

from nexus.db.documents import Session, now
from nexus.db.writes import update_document
from nexus.domain.sessions import NoteChange
from nexus.events.payloads import SessionChanged, SessionOpened


async def on_opened(run_id: str, ev: SessionOpened) -> None:
    await update_document(
        Session, ev.session_id,
        {
            "$set": {"status": ev.status, "updated_at": now(), "backend": ev.backend, "project_path": ev.project_path},
            "$setOnInsert": {
                "run_id": run_id, "parent_session_id": ev.parent_session_id, "notes": [], "changes": [], "created_at": now(),
            },
        },
        upsert=True,
    )


async def on_change(run_id: str, ev: SessionChanged) -> None:
    change = msgspec.to_builtins(ev.change)
    update: dict = {"$push": {"changes": change}, "$set": {"updated_at": now()}}
    if isinstance(ev.change, NoteChange):
        update["$push"]["notes"] = ev.change.message
    coll = Session.get_pymongo_collection()
    # The seq guard makes a redelivered change a no-op; the upsert covers a change that outran its "opened".
    not_yet = {"changes.seq": {"$ne": ev.change.seq}}
    res = await update_document(Session, ev.session_id, update, not_yet)
    if res.matched_count == 0 and await coll.count_documents({"_id": ev.session_id}) == 0:
        await update_document(
            Session, ev.session_id,
            {"$setOnInsert": {"run_id": run_id, "parent_session_id": ev.parent_session_id, "status": "active",
                              "backend": "", "project_path": "", "notes": [], "changes": [], "created_at": now()}},
            upsert=True,
        )
        await update_document(Session, ev.session_id, update, not_yet)

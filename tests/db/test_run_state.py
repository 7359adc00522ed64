"""The launch's staleness read asks the database for a run's status and attempt only (every field
returned is converted by FerretDB and decoded by the worker; a run stored before configs were kept
apart carries its whole config), and answers as a read of the whole run would."""

import uuid

import pytest
from pymongo import monitoring

from beanie.odm.utils.dump import get_dict

from nexus.db.connection import connect_db
from nexus.db.documents import Run
from nexus.db.run_state import run_state

pytestmark = pytest.mark.infra


class Replies(monitoring.CommandListener):
    def __init__(self) -> None:
        self.documents: list[dict] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name == "find":
            self.documents.extend(event.reply.get("cursor", {}).get("firstBatch", []))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_run_state_reads_two_fields_and_answers_like_the_run(mongo_url: str) -> None:
    replies = Replies()
    client = await connect_db(mongo_url, f"t_{uuid.uuid4().hex[:10]}", create_indexes=False, listeners=[replies])
    try:
        run_id = f"run_{uuid.uuid4().hex}"
        config = {"system_prompt": "long " * 200, "llm": {"provider": "scripted"}, "limits": {"wall_clock_s": 60}}
        run = Run(
            id=run_id,
            task_id="task_1",
            agent_id="agt_1",
            agent_revision=1,
            session_id="ses_1",
            status="running",
            attempt=2,
        )
        await Run.get_pymongo_collection().insert_one(get_dict(run, to_db=True) | {"config": config})  # the old shape
        state = await run_state(run_id)
        assert state is not None and (state.status, state.attempt) == ("running", 2)
        assert replies.documents and all(set(d) <= {"_id", "status", "attempt"} for d in replies.documents), (
            replies.documents
        )
        assert await run_state(f"run_{uuid.uuid4().hex}") is None
    finally:
        await client.close()

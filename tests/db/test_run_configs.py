"""A run's config is its own insert-only document beside the run (real FerretDB): the run document
carries none, the two are written together (concurrent ones grouped), and a run stored before configs
were kept apart (config inline) is read either way."""

import asyncio
import uuid

import pytest
from beanie.odm.utils.dump import get_dict
from pymongo import monitoring

from nexus.db.connection import connect_db
from nexus.db.documents import Run, RunConfigRecord
from nexus.db.run_configs import config_of, store_run

pytestmark = pytest.mark.infra


class Inserts(monitoring.CommandListener):
    """The ids of each insert command, in the order the commands started: (collection, ids)."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, list[str]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert":
            self.commands.append((event.command["insert"], [d["_id"] for d in event.command.get("documents", [])]))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def a_run(**fields) -> Run:
    run_id = f"run_{uuid.uuid4().hex}"
    return Run(id=run_id, task_id="task_1", agent_id="agt_1", agent_revision=1, session_id=f"ses_{run_id}", **fields)


def a_config(run: Run) -> dict:
    return {"run_id": run.id, "system_prompt": "long " * 500, "tools": ["note"], "limits": {"wall_clock_s": 60}}


async def test_a_run_is_stored_without_its_config_and_the_config_beside_it(fresh_db) -> None:
    run = a_run(wall_clock_s=60)
    config = a_config(run)
    await store_run(run, config)
    stored = await Run.get_pymongo_collection().find_one({"_id": run.id})
    assert "config" not in stored and stored["wall_clock_s"] == 60
    assert await RunConfigRecord.get_pymongo_collection().find_one({"_id": run.id}) == {"_id": run.id, "config": config}
    assert await config_of(run.id) == config
    assert (await Run.get(run.id)).status == "queued"


async def test_runs_and_their_configs_go_out_together_concurrent_ones_grouped(mongo_url: str) -> None:
    inserts = Inserts()
    client = await connect_db(mongo_url, f"t_{uuid.uuid4().hex[:10]}", create_indexes=False, listeners=[inserts])
    try:
        runs = [a_run() for _ in range(12)]
        await asyncio.gather(*(store_run(r, a_config(r)) for r in runs))
        sent = {(collection, doc_id) for collection, ids in inserts.commands for doc_id in ids}
        assert all(("run_configs", r.id) in sent and ("runs", r.id) in sent for r in runs), inserts.commands
        # group commit: the configs of concurrent dispatches go out in fewer commands than configs
        assert len([c for c, _ in inserts.commands if c == "run_configs"]) < len(runs), inserts.commands
        assert [await config_of(r.id) for r in runs] == [a_config(r) for r in runs]
    finally:
        await client.close()


async def test_a_run_stored_before_keeps_its_config_inline_and_is_read_either_way(fresh_db) -> None:
    run = a_run()
    config = a_config(run)
    await Run.get_pymongo_collection().insert_one(get_dict(run, to_db=True) | {"config": config})  # the old shape
    assert await config_of(run.id) == config
    read = await Run.get(run.id)  # the run model ignores the inline config
    assert read is not None and read.id == run.id and "config" not in read.model_dump()
    assert await config_of(f"run_{uuid.uuid4().hex}") is None

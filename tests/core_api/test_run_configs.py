"""A run's config lives in its own document beside the run (real FerretDB and NATS, core-api in
process): a dispatched run's document carries none, the API shows one run with its config, and list
pages and the UI's run pages read no config. A run stored before configs were kept apart (config
inline on the run) is still shown, launched again after a failed attempt, and retried."""

import dataclasses

import pytest

from nexus.core_api.runs.ingest import ingest_group
from nexus.db.documents import Run, RunConfigRecord, now
from nexus.db.stats import COMMANDS
from nexus.db.writes import update_document
from nexus.events import payloads as p
from tests.core_api.conftest import assert_problem, in_app, new_agent, new_run
from tests.core_api.test_announce_after_store import delivery
from tests.core_api.test_run_facts_write import Recorder
from tests.core_api.test_ui import jar, sign_in

pytestmark = pytest.mark.infra


async def _stored(run_id: str) -> tuple[dict, dict | None]:
    """The run's document and its config's, as the database holds them."""
    run = await Run.get_pymongo_collection().find_one({"_id": run_id})
    return run, await RunConfigRecord.get_pymongo_collection().find_one({"_id": run_id})


async def _as_stored_before(run_id: str) -> dict:
    """Make the run one stored before configs were kept apart: its config inline, no config document,
    no `wall_clock_s`. Returns the config."""
    coll = RunConfigRecord.get_pymongo_collection()
    config = (await coll.find_one({"_id": run_id}))["config"]
    await coll.delete_one({"_id": run_id})
    await update_document(Run, run_id, {"$set": {"config": config}, "$unset": {"wall_clock_s": ""}})
    return config


async def _ended(run_id: str) -> None:
    await update_document(Run, run_id, {"$set": {"status": "failed", "reason": "test", "ended_at": now()}})


def config_reads() -> float:
    return COMMANDS.labels("find", "run_configs", "ok")._value.get()


async def test_a_dispatched_run_keeps_its_config_beside_it_and_lists_read_none(client, settings) -> None:
    agent = await new_agent(client, limits={"wall_clock_s": 321})
    run = await new_run(client, agent)  # GET /v1/runs/{id}: with its config
    assert run["config"]["system_prompt"] == "You help." and run["config"]["run_id"] == run["id"]
    stored, record = await in_app(client, _stored, run["id"])
    assert "config" not in stored and stored["wall_clock_s"] == 321
    assert record is not None and record["config"] == run["config"]

    ui = await sign_in(client, settings.admin_key)
    before = config_reads()
    assert (await client.get(f"/v1/runs/{run['id']}", params={"config": "false"})).json()["config"] is None
    listed = (await client.get("/v1/runs", params={"task_id": run["task_id"]})).json()["items"]
    assert [(r["id"], r["config"]) for r in listed] == [(run["id"], None)]
    with jar(client, ui) as c:
        for path in (
            "/ui/runs",
            f"/ui/runs?agent_id={agent['id']}",
            f"/ui/runs/{run['id']}",
            f"/ui/agents/{agent['id']}",
        ):
            r = await c.get(path)
            assert r.status_code == 200 and run["id"] in r.text, path
        assert (await c.get(f"/ui/runs/{run['id']}/summary")).status_code == 200
    assert config_reads() == before  # none of these pages needs the config


async def test_a_run_stored_with_its_config_inline_is_shown_listed_and_retried(client, settings) -> None:
    run = await new_run(client)
    config = await in_app(client, _as_stored_before, run["id"])
    await in_app(client, _ended, run["id"])

    shown = (await client.get(f"/v1/runs/{run['id']}")).json()
    assert (shown["status"], shown["config"]) == ("failed", config)
    listed = (await client.get("/v1/runs", params={"task_id": run["task_id"]})).json()["items"]
    assert [(r["id"], r["status"], r["config"]) for r in listed] == [(run["id"], "failed", None)]
    with jar(client, await sign_in(client, settings.admin_key)) as c:
        for path in (f"/ui/runs?task_id={run['task_id']}", f"/ui/runs/{run['id']}", f"/ui/tasks/{run['task_id']}"):
            r = await c.get(path)
            assert r.status_code == 200 and run["id"] in r.text, path

    r = await client.post(f"/v1/runs/{run['id']}/retry")
    assert r.status_code == 201, r.text
    new = (await client.get(f"/v1/runs/{r.json()['id']}")).json()
    # the same pinned config, as a new run with its own session
    assert new["config"] == {**config, "run_id": new["id"], "session_id": new["session_id"]}
    assert new["session_id"] != run["session_id"]
    stored, record = await in_app(client, _stored, new["id"])
    assert "config" not in stored and stored["wall_clock_s"] == config["limits"]["wall_clock_s"]
    assert record is not None and record["config"] == new["config"]


async def test_a_run_stored_with_its_config_inline_launches_its_next_attempt_with_it(client, app) -> None:
    run = await new_run(client)
    config = await in_app(client, _as_stored_before, run["id"])
    recorder = Recorder(app.state.ctx.publisher)
    ctx = dataclasses.replace(app.state.ctx, publisher=recorder)
    group = [
        delivery(run["id"], "run.runtime", p.RuntimeChanged(phase="launched", attempt=1, runtime="local"), 1),
        delivery(run["id"], "run.status", p.RunStatusChanged(status="running"), 2),
        delivery(
            run["id"], "run.runtime", p.RuntimeChanged(phase="exited", attempt=1, runtime="local", exit_code=-9), 3
        ),
    ]
    await in_app(client, ingest_group, ctx, group)
    stored = (await client.get(f"/v1/runs/{run['id']}")).json()
    assert (stored["status"], stored["attempt"]) == ("queued", 2)
    (launch,) = [d for t, d in recorder.sent if t == "worker.launch_run"]
    assert launch.attempt == 2 and launch.config.run_id == run["id"]
    assert launch.config.system_prompt == config["system_prompt"] and launch.config.session_id == run["session_id"]


async def test_one_run_without_its_config_shows_it_as_none_and_is_not_retried(client) -> None:
    """A run whose config is nowhere (a half-written store, a hand-made document) still reads: the
    config shows as none instead of failing the request; a retry is refused, naming the config."""
    run = await new_run(client)

    async def drop(run_id: str) -> None:
        await RunConfigRecord.get_pymongo_collection().delete_one({"_id": run_id})

    await in_app(client, drop, run["id"])
    r = await client.get(f"/v1/runs/{run['id']}")
    assert r.status_code == 200 and r.json()["config"] is None and r.json()["id"] == run["id"]
    await in_app(client, _ended, run["id"])
    assert_problem(await client.post(f"/v1/runs/{run['id']}/retry"), 409, "config")


async def test_a_queued_run_without_its_config_is_ended_failed_by_the_requeue_sweep(client, app) -> None:
    """Its launch cannot be commanded again without its config: the sweep ends it instead of trying forever."""
    from datetime import timedelta

    from nexus.core_api.workflow.engine import requeue_stale

    run = await new_run(client)

    async def lost_and_stale(run_id: str) -> None:
        await RunConfigRecord.get_pymongo_collection().delete_one({"_id": run_id})
        await update_document(Run, run_id, {"$set": {"updated_at": now() - timedelta(hours=1)}})

    await in_app(client, lost_and_stale, run["id"])
    await in_app(client, requeue_stale, app.state.ctx)
    ended = (await client.get(f"/v1/runs/{run['id']}")).json()
    assert (ended["status"], ended["reason"]) == ("failed", "its config was not stored: it cannot be launched")
    assert (await client.get(f"/v1/tasks/{run['task_id']}")).json()["status"] == "failed"

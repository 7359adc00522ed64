"""A card whose run ended shows what its task keeps of the run (`run_brief`, written with the task's move
when the run ends), exactly what reading the task's runs shows; the board then reads no run for it.
Real NATS and FerretDB; the run's events go through core-api's own ingestion."""

import asyncio

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from nexus.core_api.runs.ingest import handle_run_event
from nexus.core_api.workflow.tasks import follow_run
from nexus.db.documents import Run, Task
from nexus.db.stats import COMMANDS
from nexus.db.writes import update_document
from nexus.domain.tasks import TaskStatus
from nexus.events.payloads import RunStatusChanged, Usage
from tests.core_api.conftest import new_run
from tests.core_api.test_run_convergence import _publish, publisher  # noqa: F401 — the fixture is used by name

pytestmark = pytest.mark.infra


async def in_app(client: AsyncTestClient, fn, *args):
    return await asyncio.to_thread(client.blocking_portal.call, fn, *args)


def _run_finds() -> float:
    return sum(
        s.value
        for m in COMMANDS.collect()
        for s in m.samples
        if s.name == "nexus_db_commands_total" and s.labels["collection"] == "runs" and s.labels["command"] == "find"
    )


async def _card(client: AsyncTestClient, task_id: str) -> dict:
    r = await client.get("/v1/board", params={"final_limit": 500})
    assert r.status_code == 200, r.text
    return next(c for col in r.json()["columns"] for c in col["cards"] if c["task_id"] == task_id)


async def _unset_brief(task_id: str) -> None:
    """As a task stored before briefs: the field gone, and core-api's kept copy of the task forgotten."""
    await update_document(Task, task_id, {"$unset": {"run_brief": ""}})


async def _set_cost(run_id: str, cost: float) -> None:
    await Run.get_pymongo_collection().update_one({"_id": run_id}, {"$set": {"usage.cost_usd": cost}})


async def _brief(task_id: str) -> dict | None:
    doc = await Task.get_pymongo_collection().find_one({"_id": task_id})
    return doc.get("run_brief")


async def test_an_ended_runs_card_comes_from_its_task_as_its_runs_say(
    client: AsyncTestClient,
    app: Litestar,
    publisher,
) -> None:
    ctx = app.state.ctx
    run = await new_run(client)
    run_id, task_id = run["id"], run["task_id"]
    assert await in_app(client, _brief, task_id) == {"costs": {}}  # running: no run ended yet
    await in_app(
        client,
        handle_run_event,
        ctx,
        await _publish(publisher, run_id, "run.status", RunStatusChanged(status="running", attempt=1)),
    )
    ending = await _publish(
        publisher, run_id, "run.status", RunStatusChanged(status="succeeded", attempt=1, usage=Usage(cost_usd=0.25))
    )
    before_end = _run_finds()
    await in_app(client, handle_run_event, ctx, ending)
    assert _run_finds() == before_end  # the task added the run's cost to those it keeps: no run read
    assert (await client.get(f"/v1/tasks/{task_id}")).json()["status"] == "done"
    assert await in_app(client, _brief, task_id) == {
        "id": run_id,
        "status": "succeeded",
        "attempt": 1,
        "cost_usd": 0.25,
        "costs": {run_id: 0.25},
    }

    before = _run_finds()
    kept = await _card(client, task_id)
    assert _run_finds() == before  # no card on this board reads its runs: each task kept its ended run
    assert kept["run"] == {"id": run_id, "status": "succeeded"} and kept["cost_usd"] == 0.25, kept
    await in_app(client, _unset_brief, task_id)  # as a task stored before it was kept: its runs are read
    assert await _card(client, task_id) == kept

    # The run changed after its task stopped following it (here its cost, as a late verdict would):
    # the task's move is not made again, and the facts it keeps are put right (read from the runs).
    await in_app(client, _set_cost, run_id, 0.5)
    assert await in_app(client, follow_run, task_id, TaskStatus.DONE, run_id) == []
    assert (await in_app(client, _brief, task_id))["cost_usd"] == 0.5
    card = await _card(client, task_id)
    assert card["cost_usd"] == 0.5 and card["status"] == "done", card


async def test_a_task_that_keeps_no_costs_reads_its_runs_once_when_a_run_ends(
    client: AsyncTestClient,
    app: Litestar,
    publisher,
) -> None:
    """A task stored before tasks kept their runs' costs: its run's end reads the task's runs (every run's
    cost counts on the card), and from then on it keeps them."""
    ctx = app.state.ctx
    run = await new_run(client)
    run_id, task_id = run["id"], run["task_id"]
    await in_app(client, _unset_brief, task_id)
    for ev in (
        RunStatusChanged(status="running", attempt=1),
        RunStatusChanged(status="failed", attempt=1, usage=Usage(cost_usd=0.75)),
    ):
        await in_app(client, handle_run_event, ctx, await _publish(publisher, run_id, "run.status", ev))
    brief = await in_app(client, _brief, task_id)
    assert brief == {"id": run_id, "status": "failed", "attempt": 1, "cost_usd": 0.75, "costs": {run_id: 0.75}}

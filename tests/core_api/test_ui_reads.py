"""What each UI page reads: the database commands and the documents one render costs (core-api's own
counters, `nexus_db_commands_total` and `nexus_db_documents_returned_total`) are the same with three
times the history, and within what the page shows. A page that went back to walking history (the
board's runs by `$in`, a filtered list read by its whole index entry, a walk that grows with history,
an agent page listing fifty runs) fails here; no time is measured."""

import uuid
from collections import Counter

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from nexus.core_api.settings import CoreSettings
from nexus.db.documents import Run, Task
from nexus.db.paging import BUCKET, MAX_WALK, reserve
from nexus.db.stats import COMMANDS, DOCUMENTS
from nexus.domain.ids import new_id
from tests.conftest import creds_of
from tests.core_api.conftest import in_app, make_settings, new_agent, new_run
from tests.core_api.test_ui import jar, sign_in

pytestmark = pytest.mark.infra
STATUSES = ["succeeded"] * 8 + ["failed", "cancelled"]  # one run in ten failed, as in the history benchmark
# Not the page's reads: the signed-in key's lookup (cached, refreshed now and then) and the driver's
# own commands (buildInfo and the like name no collection), nor the one-time probe of the collection
# run events were kept in before chunks.
SESSION = {"api_keys", "", "run_events"}
# Documents one render may be handed, per page: what it shows (a bucket or two of a list, the board's
# cards and their runs), never what history holds.
BUDGET = {
    "board": 30,  # the newest 20 done cards (their runs' facts on the task), the goals
    "runs": BUCKET,
    "runs_failed": BUCKET,
    "runs_of_agent": BUCKET,
    "run": 10,
    "task": 5,
    "agent": BUCKET + 5,  # its latest runs: one bucket, not pages of them
    "agents": 5,
    "goals": 5,
    "audit": BUCKET,
}


@pytest.fixture(scope="module")
def settings(nats_url: str, mongo_url: str, nats_auth, tmp_path_factory: pytest.TempPathFactory) -> CoreSettings:
    """The read cache off: every read a page makes reaches the database and is counted."""
    made = make_settings(
        nats_url, mongo_url, tmp_path_factory.mktemp("ui_reads"), "uireads", creds_of(nats_auth, "core-api")
    )
    return msgspec.structs.replace(made, read_cache_ttl_s=0.0)


async def grow(seed: dict, buckets: int) -> None:
    """`buckets` more buckets of runs (and their tasks, done) copied from a real run, newest last, as
    bench.history loads them: buckets reserved the way core-api takes them."""
    runs, tasks = Run.get_pymongo_collection(), Task.get_pymongo_collection()
    run, task = await runs.find_one({"_id": seed["id"]}), await tasks.find_one({"_id": seed["task_id"]})
    first_run, first_task = await reserve(runs, buckets), await reserve(tasks, buckets)
    new_runs, new_tasks = [], []
    for i in range(buckets * BUCKET):
        run_id, task_id = new_id("run"), new_id("tsk")
        new_runs.append(
            {
                **run,
                "_id": run_id,
                "task_id": task_id,
                "page": first_run + i // BUCKET,
                "status": STATUSES[i % len(STATUSES)],
            }
        )
        # as core-api keeps an ended run's facts on its task
        brief = {"id": run_id, "status": STATUSES[i % len(STATUSES)], "attempt": 1, "cost_usd": 0.0}
        new_tasks.append(
            {
                **task,
                "_id": task_id,
                "current_run_id": run_id,
                "run_brief": brief,
                "page": first_task + i // BUCKET,
                "status": "done",
            }
        )
    await runs.insert_many(new_runs)
    await tasks.insert_many(new_tasks)


def _counted() -> Counter:
    out: Counter = Counter()
    for metric in COMMANDS.collect():
        for s in metric.samples:
            if s.name == "nexus_db_commands_total" and s.labels["collection"] not in SESSION:
                out[("commands", s.labels["collection"], s.labels["command"])] += s.value
    for metric in DOCUMENTS.collect():
        for s in metric.samples:
            if s.name == "nexus_db_documents_returned_total" and s.labels["collection"] not in SESSION:
                out[("documents", s.labels["collection"], "")] += s.value
    return out


async def reads(c: AsyncTestClient, path: str) -> Counter:
    """The commands and documents one render of `path` costs."""
    before = _counted()
    r = await c.get(path)
    assert r.status_code == 200, (path, r.text[:2000])
    after = _counted()
    return Counter({k: int(v - before[k]) for k, v in after.items() if v - before[k]})


def documents(counted: Counter) -> int:
    return sum(v for (kind, _, _), v in counted.items() if kind == "documents")


async def test_pages_read_what_they_show_not_what_history_holds(client: AsyncTestClient, settings) -> None:
    agent = await new_agent(client, name=f"reads-{uuid.uuid4().hex[:6]}")
    seed = await new_run(client, agent)
    await in_app(
        client, grow, seed, MAX_WALK + 4
    )  # enough that a failed run (one in ten) fills its page within the walk
    cookies = await sign_in(client, settings.admin_key)
    pages = {
        "board": "/ui/board",
        "runs": "/ui/runs",
        "runs_failed": "/ui/runs?status=failed",
        "runs_of_agent": f"/ui/runs?agent_id={agent['id']}",
        "run": f"/ui/runs/{seed['id']}",
        "task": f"/ui/tasks/{seed['task_id']}",
        "agent": f"/ui/agents/{agent['id']}",
        "agents": "/ui/agents",
        "goals": "/ui/goals",
        "audit": "/ui/admin/audit",
    }
    with jar(client, cookies) as c:
        small = {name: await reads(c, path) for name, path in pages.items()}
        await in_app(client, grow, seed, 2 * (MAX_WALK + 4))
        large = {name: await reads(c, path) for name, path in pages.items()}
    for name in pages:
        assert large[name] == small[name], (name, small[name], large[name])  # history did not change the reads
        assert documents(large[name]) <= BUDGET[name], (name, large[name])
    # A card whose run ended shows the facts its task keeps of it: the board reads no run for it (it
    # would be one round trip per card; an `$in` over the cards would have FerretDB read every run in
    # history). A filtered list walks a bounded number of buckets.
    columns = (await client.get("/v1/board")).json()["columns"]
    running = sum(len(col["cards"]) for col in columns if col["id"] in ("running", "waiting_approval"))
    assert running == 1  # the seed's task: its run has not ended, its column follows the run
    assert small["board"][("commands", "runs", "find")] == running, small["board"]
    assert small["runs_failed"][("commands", "runs", "find")] <= MAX_WALK, small["runs_failed"]
    assert small["runs"][("commands", "runs", "find")] == 1, small["runs"]  # the newest bucket fills the page

"""Updates of one document hold under concurrency on the real database (FerretDB v1 applies an
update as read-change-write: without the per-document lock, concurrent updates lose each other)."""

import asyncio
import uuid

import pytest

from nexus.db.connection import update_versioned
from nexus.db.documents import Goal, Task
from nexus.db.writes import update_document

pytestmark = pytest.mark.infra



async def test_concurrent_updates_of_different_fields_both_land(fresh_db) -> None:
    ids = [f"goal_{uuid.uuid4().hex}" for _ in range(30)]
    for goal_id in ids:
        await Goal(id=goal_id, title="t").insert()
    await asyncio.gather(*(update_document(Goal, g, {"$set": {field: "x"}}) for g in ids for field in ("description", "meta_run_id")))
    for goal_id in ids:
        goal = await Goal.get(goal_id)
        assert (goal.description, goal.meta_run_id) == ("x", "x"), goal_id


async def test_of_two_compare_and_sets_with_one_condition_exactly_one_wins(fresh_db) -> None:
    ids = [f"goal_{uuid.uuid4().hex}" for _ in range(30)]
    for goal_id in ids:
        await Goal(id=goal_id, title="t", status="open").insert()
    results = await asyncio.gather(*(update_document(Goal, g, {"$set": {"status": who}}, {"status": "open"})
                                     for g in ids for who in ("done", "failed")))
    for i, goal_id in enumerate(ids):
        pair = results[2 * i : 2 * i + 2]
        assert sorted(r.modified_count for r in pair) == [0, 1], goal_id


async def test_update_versioned_claims_each_task_once(fresh_db) -> None:
    tasks = [Task(id=f"task_{uuid.uuid4().hex}", title="t", status="ready") for _ in range(30)]
    for task in tasks:
        await task.insert()

    def claim(who: str):
        return lambda t: {"status": "in_progress", "current_run_id": who} if t.status == "ready" else None

    claims = await asyncio.gather(*(update_versioned(Task, t.id, claim(who)) for t in tasks for who in ("run_a", "run_b", "run_c")))
    for i, task in enumerate(tasks):
        assert sum(c is not None for c in claims[3 * i : 3 * i + 3]) == 1, task.id

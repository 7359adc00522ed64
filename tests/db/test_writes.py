"""Updates of one document hold under concurrency on the real database (FerretDB v1 applies an
update as read-change-write: without the per-document lock, concurrent updates lose each other)."""

import asyncio
import uuid

import pytest

from nexus.db.connection import update_versioned
from nexus.db.documents import Goal, Run, Task
from nexus.db.writes import Written, update_document

pytestmark = pytest.mark.infra


async def test_concurrent_updates_of_different_fields_both_land(fresh_db) -> None:
    ids = [f"goal_{uuid.uuid4().hex}" for _ in range(30)]
    for goal_id in ids:
        await Goal(id=goal_id, title="t").insert()
    await asyncio.gather(
        *(update_document(Goal, g, {"$set": {field: "x"}}) for g in ids for field in ("description", "meta_run_id"))
    )
    for goal_id in ids:
        goal = await Goal.get(goal_id)
        assert (goal.description, goal.meta_run_id) == ("x", "x"), goal_id


async def test_of_two_compare_and_sets_with_one_condition_exactly_one_wins(fresh_db) -> None:
    ids = [f"goal_{uuid.uuid4().hex}" for _ in range(30)]
    for goal_id in ids:
        await Goal(id=goal_id, title="t", status="open").insert()
    results = await asyncio.gather(
        *(
            update_document(Goal, g, {"$set": {"status": who}}, {"status": "open"})
            for g in ids
            for who in ("done", "failed")
        )
    )
    for i, goal_id in enumerate(ids):
        pair = results[2 * i : 2 * i + 2]
        assert sorted(r.modified_count for r in pair) == [0, 1], goal_id


async def test_update_versioned_claims_each_task_once(fresh_db) -> None:
    tasks = [Task(id=f"task_{uuid.uuid4().hex}", title="t", status="ready") for _ in range(30)]
    for task in tasks:
        await task.insert()

    def claim(who: str):
        return lambda t: {"status": "in_progress", "current_run_id": who} if t.status == "ready" else None

    claims = await asyncio.gather(
        *(update_versioned(Task, t.id, claim(who)) for t in tasks for who in ("run_a", "run_b", "run_c"))
    )
    for i, task in enumerate(tasks):
        assert sum(c is not None for c in claims[3 * i : 3 * i + 3]) == 1, task.id


async def test_update_versioned_starts_from_its_own_last_write(fresh_db) -> None:
    """A document this process wrote last is not read back for its next versioned update (one write
    per transition, no read); a copy made stale by any other write is refused by the version and
    the update reads the document, so nothing written in between is lost."""
    from nexus.db.stats import COMMANDS

    def finds() -> float:
        return COMMANDS.labels("find", "tasks", "ok")._value.get()

    task = Task(id=f"task_{uuid.uuid4().hex}", title="t", status="ready")
    await task.insert()
    await update_versioned(Task, task.id, lambda t: {"status": "in_progress"})  # read once: nothing kept yet
    before = finds()
    done = await update_versioned(Task, task.id, lambda t: {"status": "done"} if t.status == "in_progress" else None)
    assert done is not None and done.version == 2
    assert finds() == before  # started from the copy it kept
    done.title = "changed by the caller, not written"  # the caller's document is not the kept copy

    def declines(t: Task) -> None:
        t.title = "changed by a mutate that then declined"
        return None

    assert await update_versioned(Task, task.id, declines) is None
    assert finds() == before + 1  # a decline on the kept copy is asked again of the stored document
    kept = await update_versioned(Task, task.id, lambda t: {"priority": 5} if t.title == "t" else None)
    assert kept is not None and kept.version == 3 and finds() == before + 1
    # Any other update of the document drops the kept copy, even one that leaves the version as it
    # is (the compare-and-set could not tell): the next update reads what it wrote.
    await update_document(Task, task.id, {"$set": {"description": "from elsewhere"}})
    again = await update_versioned(Task, task.id, lambda t: {"priority": 7})
    assert again is not None and again.description == "from elsewhere" and again.version == 4
    assert finds() == before + 2
    stored = await Task.get(task.id)
    assert (stored.status, stored.title, stored.description, stored.priority, stored.version) == (
        "done",
        "t",
        "from elsewhere",
        7,
        4,
    )


async def test_a_stale_kept_copy_is_refused_by_its_version(fresh_db) -> None:
    """Even a kept copy nobody told us about (another core-api process wrote) only costs a retry."""
    from nexus.db.writes import written

    task = Task(id=f"task_{uuid.uuid4().hex}", title="t", status="ready")
    await task.insert()
    written.keep(Task, task.id, task)  # version 0 as inserted
    await Task.get_pymongo_collection().update_one(
        {"_id": task.id}, {"$set": {"status": "cancelled"}, "$inc": {"version": 1}}
    )
    moved = await update_versioned(Task, task.id, lambda t: {"status": "in_progress"} if t.status == "ready" else None)
    assert moved is None  # it saw the cancelled task, not the stale copy
    assert (await Task.get(task.id)).status == "cancelled"


async def test_a_stale_kept_copy_does_not_decline_for_the_stored_document(fresh_db) -> None:
    """The other way round: the kept copy says no (the task is not ready), the stored one, moved back
    to ready by another process, says yes — the claim is made, not lost."""
    from nexus.db.writes import written

    task = Task(id=f"task_{uuid.uuid4().hex}", title="t", status="in_progress")
    await task.insert()
    written.keep(Task, task.id, task)
    await Task.get_pymongo_collection().update_one(
        {"_id": task.id}, {"$set": {"status": "ready"}, "$inc": {"version": 1}}
    )
    moved = await update_versioned(Task, task.id, lambda t: {"status": "in_progress"} if t.status == "ready" else None)
    assert moved is not None and moved.version == 2
    assert (await Task.get(task.id)).status == "in_progress"


async def test_kept_copies_are_bounded_and_the_least_recently_written_goes_first(fresh_db) -> None:
    """However many documents pass through, the kept copies stay at the bound: the one written
    longest ago goes, the ones being worked on stay."""
    kept = Written(max_entries=3)
    tasks = [Task(id=f"task_{uuid.uuid4().hex}", title=f"t{i}") for i in range(4)]
    for t in tasks[:3]:
        kept.keep(Task, t.id, t)
    kept.keep(Task, tasks[0].id, tasks[0])  # written again: now the most recent
    kept.keep(Task, tasks[3].id, tasks[3])  # one too many: t1, written longest ago, goes
    assert [title for title in ("t0", "t1", "t2", "t3") if kept.peek(Task, tasks[int(title[1])].id) is not None] == [
        "t0",
        "t2",
        "t3",
    ]


async def test_kept_copies_share_nothing_nested_with_the_caller(fresh_db) -> None:
    """A caller that changes something inside a field (a run's usage, its attempts) changes neither
    the kept copy nor the next caller's."""
    kept = Written()
    run = Run(
        id=f"run_{uuid.uuid4().hex}",
        task_id="task_1",
        agent_id="agt_1",
        agent_revision=1,
        session_id="ses_1",
        usage={"task": {"title": "as kept", "target_files": ["a.py"]}, "tools": ["read"]},
        attempts=[{"attempt": 1, "phase": "launched"}],
    )
    kept.keep(Run, run.id, run)
    run.usage["task"]["title"] = "changed by the caller"
    run.attempts[0]["phase"] = "changed by the caller"
    taken = kept.take(Run, run.id)
    taken.usage["task"]["target_files"].append("b.py")
    taken.usage["tools"].append("shell")
    again = kept.take(Run, run.id)
    assert again.usage == {"task": {"title": "as kept", "target_files": ["a.py"]}, "tools": ["read"]}
    assert again.attempts == [{"attempt": 1, "phase": "launched"}]
    assert again == kept.peek(Run, run.id) and again is not kept.peek(Run, run.id)

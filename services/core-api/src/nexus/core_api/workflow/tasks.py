"""How tasks move: by a person (the state machine decides), by their run's fate, and by their
blockers being done. A move is a compare-and-set on the task's version; it returns the task as
stored and its follow-ups (announce it, move its card, promote what it blocked, dispatch)."""

from typing import cast

from nexus.core_api.errors import DomainError
from nexus.core_api.tasks.service import blocker_statuses, get
from nexus.core_api.workflow.followups import Dispatch, Followup, Promote, TaskMoved
from nexus.db.connection import update_versioned
from nexus.db.documents import Run, Task
from nexus.domain.json_types import JsonObject
from nexus.domain.runs import RUN_FINAL
from nexus.domain.tasks import TaskStatus, blockers_done, check_task_move

Moved = tuple[Task, list[Followup]]


def _moved(task: Task, target: TaskStatus) -> list[Followup]:
    then: list[Followup] = [TaskMoved("task.status_changed", task)]
    # As the move's compare-and-set found it: a task marked as a blocker since has a newer version.
    if target == TaskStatus.DONE and task.blocks is not False:
        then.append(Promote(task.id))
    return then


async def move(task_id: str, target: TaskStatus) -> Moved:
    """A person moves a task; 409 naming the rule when its state machine refuses."""
    task = await get(task_id)
    if target == task.status:
        return task, []
    check_task_move(TaskStatus(task.status), target)
    if target == TaskStatus.READY and not blockers_done(await blocker_statuses(task.blocked_by)):
        raise DomainError(409, "a task becomes ready only when its blockers are done", field="status")

    def mutate(t: Task) -> JsonObject | None:
        check_task_move(TaskStatus(t.status), target)
        return {"status": target.value}

    moved = await update_versioned(Task, task.id, mutate)
    if moved is None:
        return task, []
    return moved, _moved(moved, target)


# What a task keeps of its runs for the board's card (`Task.run_brief`): its current run as it ended
# ({"id", "status", "attempt"}), the cost of all its runs ("cost_usd") and each run's cost ("costs", by run
# id), so that the next run's end adds its own cost without reading the others.
RUN_FACTS = ("id", "status", "attempt")


async def ended_briefs(task_id: str) -> tuple[dict[str, JsonObject], dict[str, float]]:
    """Each ended run of the task ({"id", "status", "attempt"}) and every run's cost: one read, by the
    task's index — for a task that does not keep its runs' costs yet (stored before it did)."""
    runs = await Run.find({"task_id": task_id}).to_list()
    costs = {r.id: float((r.usage or {}).get("cost_usd", 0.0)) for r in runs}
    return {r.id: {"id": r.id, "status": r.status, "attempt": r.attempt} for r in runs if r.status in RUN_FINAL}, costs


def _brief(t: Task, run_id: str, facts: JsonObject | None, costs: dict[str, float], follows: bool) -> JsonObject:
    """The task's `run_brief` once `run_id` ended with `facts`: its facts when the task follows it (or
    already did), else the current run's facts as kept; the cost over all runs either way."""
    if facts is not None and (follows or t.current_run_id == run_id):
        head = dict(facts)
    else:
        head = {k: v for k, v in (t.run_brief or {}).items() if k in RUN_FACTS}
    return {**head, "cost_usd": round(sum(costs.values()), 6), "costs": costs}


async def follow_run(
    task_id: str, target: TaskStatus, run_id: str, ended: JsonObject | None = None, *, again: bool = False
) -> list[Followup]:
    """The run decides the task's fate: done/failed/cancelled when it ends. The same write keeps the
    ended run's facts on the task for the board (`run_brief`); a task that does not follow still has them
    put right when they changed (a late verdict on a task a person moved). `ended` is the run as it
    ended ({"id", "status", "attempt", "cost_usd"}): the task adds it to the costs it keeps, reading no
    run; without it, or for a task that keeps no costs yet, the task's runs are read. `again`: the run's
    end is carried out once more (the process that first did may have died after moving the task and
    before announcing it), so a task found already following this run is announced again."""
    read = None if ended is not None else await ended_briefs(task_id)
    follows = unknown = False
    seen: Task | None = None

    def mutate(t: Task) -> JsonObject | None:
        nonlocal follows, unknown, seen
        seen = t
        follows = not (
            t.current_run_id not in (None, run_id)
            or t.status == target.value
            or TaskStatus(t.status) in (TaskStatus.DONE, TaskStatus.CANCELLED)
        )
        if read is not None:
            facts, costs = read[0].get(run_id), read[1]
        else:
            assert ended is not None  # one of the two is given
            kept = (t.run_brief or {}).get("costs")
            if not isinstance(kept, dict):
                unknown = True  # the task does not know its other runs' costs: read them
                return None
            facts = {k: ended[k] for k in RUN_FACTS}
            costs = {**kept, run_id: float(cast(float, ended.get("cost_usd", 0.0)))}
        brief = _brief(t, run_id, facts, costs, follows)
        if follows:
            return {"status": target.value, "current_run_id": run_id, "run_brief": brief}
        return {"run_brief": brief} if brief != t.run_brief else None

    moved = await update_versioned(Task, task_id, mutate)
    if unknown:
        return await follow_run(task_id, target, run_id, again=again)
    if moved is not None and follows:
        return _moved(moved, target)
    if again and seen is not None and seen.status == target.value and seen.current_run_id == run_id:
        return _moved(moved or seen, target)
    return []


async def promote_unblocked(done_task_id: str) -> list[Followup]:
    """When a task is done, each backlog task it blocked becomes ready once all its blockers are done."""
    then: list[Followup] = []
    async for waiting in Task.find(
        {"blocked_by": done_task_id, "status": TaskStatus.BACKLOG.value, "auto_ready": True}
    ):
        if not blockers_done(await blocker_statuses(waiting.blocked_by)):
            continue
        promoted = await update_versioned(
            Task,
            waiting.id,
            lambda t: {"status": TaskStatus.READY.value} if t.status == TaskStatus.BACKLOG.value else None,
        )
        if promoted:
            then += [TaskMoved("task.status_changed", promoted), Dispatch(promoted)]
    return then

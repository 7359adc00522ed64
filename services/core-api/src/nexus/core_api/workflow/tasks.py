"""How tasks move: by a person (the state machine decides), by their run's fate, and by their
blockers being done. A move is a compare-and-set on the task's version; it returns the task as
stored and its follow-ups (announce it, move its card, promote what it blocked, dispatch)."""

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
    if target == TaskStatus.DONE:
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


async def ended_briefs(task_id: str) -> dict[str, JsonObject]:
    """Each ended run of the task as the board's card shows it (`Task.run_brief`), with the cost of all
    the task's runs together: one read, by the task's index."""
    runs = await Run.find({"task_id": task_id}).to_list()
    cost = round(sum(float((r.usage or {}).get("cost_usd", 0.0)) for r in runs), 6)
    return {
        r.id: {"id": r.id, "status": r.status, "attempt": r.attempt, "cost_usd": cost}
        for r in runs
        if r.status in RUN_FINAL
    }


async def follow_run(task_id: str, target: TaskStatus, run_id: str) -> list[Followup]:
    """The run decides the task's fate: in_progress when it starts, done/failed when it ends. The same
    write keeps the ended run's facts on the task for the board (`run_brief`); a task that does not
    follow still has them put right when they changed (a late verdict on a task a person moved)."""
    briefs = await ended_briefs(task_id)
    follows = False

    def mutate(t: Task) -> JsonObject | None:
        nonlocal follows
        follows = not (
            t.current_run_id not in (None, run_id)
            or t.status == target.value
            or TaskStatus(t.status) in (TaskStatus.DONE, TaskStatus.CANCELLED)
        )
        if follows:
            return {"status": target.value, "current_run_id": run_id, "run_brief": briefs.get(run_id)}
        brief = briefs.get(t.current_run_id or "")
        return {"run_brief": brief} if brief is not None and brief != t.run_brief else None

    moved = await update_versioned(Task, task_id, mutate)
    return _moved(moved, target) if moved is not None and follows else []


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

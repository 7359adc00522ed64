"""Tasks move on their state machine; a ready task with an assignee becomes a run."""

import logging

from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError, not_found
from nexus.core_api.named import named_id
from nexus.core_api.schemas import iso
from nexus.core_api.tasks.schemas import TaskCreate, TaskOut, TaskUpdate
from nexus.db.connection import update_versioned
from nexus.db.cache import cached_get
from nexus.db.documents import Agent, Goal, Repository, Task
from nexus.db.writes import written
from nexus.domain.ids import new_id
from nexus.domain.tasks import TaskStatus, blockers_done, check_task_move
from nexus.events.payloads import TaskChanged

log = logging.getLogger("nexus.core_api.tasks")


def to_out(t: Task) -> TaskOut:
    return TaskOut(
        id=t.id,
        title=t.title,
        description=t.description,
        goal_id=t.goal_id,
        status=t.status,
        assignee_agent_id=t.assignee_agent_id,
        repository_id=t.repository_id,
        priority=t.priority,
        blocked_by=t.blocked_by,
        current_run_id=t.current_run_id,
        parent_session_id=t.parent_session_id,
        session_id=t.session_id,
        target_files=t.target_files,
        created_at=iso(t.created_at),
        updated_at=iso(t.updated_at),
        blocked=t.blocked,
    )


async def get(task_id: str) -> Task:
    doc = await cached_get(Task, task_id)
    if doc is None:
        raise not_found("task", task_id)
    return doc


async def _agent_id(ref: str) -> str:
    # Agents change rarely: the lookup goes through the read cache.
    return await named_id(Agent, ref, kind="agent", field="assignee", cached=True)


async def _repo_id(ref: str) -> str:
    return await named_id(Repository, ref, kind="repository", field="repository")


async def _blocker_statuses(ids: list[str], self_id: str | None = None) -> list[TaskStatus]:
    statuses = []
    for bid in ids:
        if bid == self_id:
            raise DomainError(422, "a task cannot block itself", field="blocked_by")
        blocker = await Task.get(bid)
        if blocker is None:
            raise DomainError(422, f"blocking task {bid!r} does not exist", field="blocked_by")
        statuses.append(TaskStatus(blocker.status))
    return statuses


async def _publish(ctx: Context, type_: str, t: Task) -> None:
    from nexus.core_api.board.service import publish_moved

    await ctx.publisher.publish(
        type_,
        TaskChanged(
            task_id=t.id, status=t.status, title=t.title, goal_id=t.goal_id, assignee_agent_id=t.assignee_agent_id
        ),
    )
    await publish_moved(ctx, t)


async def create(ctx: Context, data: TaskCreate, *, actor: str, **extra) -> Task:
    if data.goal_id and await Goal.get(data.goal_id) is None:
        raise DomainError(422, f"goal {data.goal_id!r} does not exist", field="goal_id")
    assignee = await _agent_id(data.assignee) if data.assignee else None
    repo = await _repo_id(data.repository) if data.repository else None
    statuses = await _blocker_statuses(data.blocked_by)
    status = TaskStatus.READY if data.status == "ready" and blockers_done(statuses) else TaskStatus.BACKLOG
    doc = Task(
        id=new_id("task"), title=data.title, description=data.description, goal_id=data.goal_id, status=status.value,
        assignee_agent_id=assignee, repository_id=repo, priority=data.priority, blocked_by=list(data.blocked_by),
        auto_ready=data.status == "ready", created_by=actor, **extra,
    )
    await doc.insert()
    written.keep(Task, doc.id, doc)  # dispatching it claims it without reading it back
    await _publish(ctx, "task.created", doc)
    return doc


async def update(task_id: str, data: TaskUpdate) -> Task:
    task = await get(task_id)
    fields: dict = {}
    if data.title is not None:
        fields["title"] = data.title
    if data.description is not None:
        fields["description"] = data.description
    if data.priority is not None:
        fields["priority"] = data.priority
    if data.assignee is not None:
        fields["assignee_agent_id"] = await _agent_id(data.assignee)
    if data.repository is not None:
        fields["repository_id"] = await _repo_id(data.repository)
    if data.blocked_by is not None:
        await _blocker_statuses(data.blocked_by, self_id=task.id)
        fields["blocked_by"] = list(data.blocked_by)
    updated = await update_versioned(Task, task.id, lambda _: fields)
    return updated or task


async def move(ctx: Context, task_id: str, target: TaskStatus) -> Task:
    task = await get(task_id)
    if target == task.status:
        return task
    check_task_move(TaskStatus(task.status), target)
    if target == TaskStatus.READY and not blockers_done(await _blocker_statuses(task.blocked_by)):
        raise DomainError(409, "a task becomes ready only when its blockers are done", field="status")

    def mutate(t: Task):
        check_task_move(TaskStatus(t.status), target)
        return {"status": target.value}

    moved = await update_versioned(Task, task.id, mutate)
    if moved is None:
        return task
    await _publish(ctx, "task.status_changed", moved)
    if target == TaskStatus.DONE:
        await promote_unblocked(ctx, moved.id)
    return moved


async def set_status_from_run(ctx: Context, task_id: str, target: TaskStatus, run_id: str) -> Task | None:
    """The run decides the task's fate: in_progress when it starts, done/failed when it ends."""

    def mutate(t: Task):
        if t.current_run_id not in (None, run_id) or t.status == target.value:
            return None
        if TaskStatus(t.status) in (TaskStatus.DONE, TaskStatus.CANCELLED):
            return None
        return {"status": target.value, "current_run_id": run_id}

    moved = await update_versioned(Task, task_id, mutate)
    if moved is not None:
        await _publish(ctx, "task.status_changed", moved)
        if target == TaskStatus.DONE:
            await promote_unblocked(ctx, moved.id)
    return moved


async def promote_unblocked(ctx: Context, done_task_id: str) -> None:
    """When a task is done, each backlog task it blocked becomes ready once all its blockers are done."""
    from nexus.core_api.runs.dispatch import dispatch_task

    async for waiting in Task.find(
        {"blocked_by": done_task_id, "status": TaskStatus.BACKLOG.value, "auto_ready": True}
    ):
        if not blockers_done(await _blocker_statuses(waiting.blocked_by)):
            continue
        promoted = await update_versioned(
            Task,
            waiting.id,
            lambda t: {"status": TaskStatus.READY.value} if t.status == TaskStatus.BACKLOG.value else None,
        )
        if promoted:
            await _publish(ctx, "task.status_changed", promoted)
            await dispatch_task(ctx, promoted)

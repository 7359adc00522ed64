"""Tasks as stored: created, read and edited here; how they move is the run workflow's (`workflow.tasks`)."""

from typing import Any

from nexus.core_api.errors import DomainError, not_found
from nexus.core_api.named import named_id
from nexus.core_api.schemas import iso
from nexus.core_api.tasks.schemas import TaskCreate, TaskOut, TaskUpdate
from nexus.db.connection import update_versioned
from nexus.db.cache import cached_get
from nexus.db.documents import Agent, Goal, Repository, Task, no_run_ended
from nexus.db.group import insert_grouped
from nexus.db.writes import update_document, written
from nexus.domain.ids import new_id
from nexus.domain.json_types import JsonObject
from nexus.domain.tasks import TaskStatus, blockers_done


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


async def blocker_statuses(ids: list[str], self_id: str | None = None, *, declared: bool = False) -> list[TaskStatus]:
    """The blockers' statuses; `declared`: the caller is making them blockers, so each is marked first
    (`Task.blocks`): one that ends after its status is read here then looks for the task it unblocks."""
    statuses = []
    for bid in ids:
        if bid == self_id:
            raise DomainError(422, "a task cannot block itself", field="blocked_by")
        if declared:
            await mark_blocking(bid)
        blocker = await Task.get(bid)
        if blocker is None:
            raise DomainError(422, f"blocking task {bid!r} does not exist", field="blocked_by")
        statuses.append(TaskStatus(blocker.status))
    return statuses


async def mark_blocking(task_id: str) -> None:
    """The version moves with the mark: a transition that started from a copy made before it is
    refused (compare-and-set) and reads the mark, in this process or another."""
    update = {"$set": {"blocks": True}, "$inc": {"version": 1}}
    await update_document(Task, task_id, update, {"blocks": {"$ne": True}})


async def create(data: TaskCreate, *, actor: str, **extra: Any) -> Task:
    """Stored, not announced: `workflow.engine.create_task` announces it."""
    doc = await build(data, actor=actor, **extra)
    await store(doc)
    return doc


async def build(data: TaskCreate, *, actor: str, task_id: str | None = None, **extra: Any) -> Task:
    """The task `data` asks for, checked (422 naming the field) but not stored."""
    if data.goal_id and await Goal.get(data.goal_id) is None:
        raise DomainError(422, f"goal {data.goal_id!r} does not exist", field="goal_id")
    assignee = await _agent_id(data.assignee) if data.assignee else None
    repo = await _repo_id(data.repository) if data.repository else None
    statuses = await blocker_statuses(data.blocked_by, declared=True)
    status = TaskStatus.READY if data.status == "ready" and blockers_done(statuses) else TaskStatus.BACKLOG
    doc = Task(
        id=task_id or new_id("task"),
        title=data.title,
        description=data.description,
        goal_id=data.goal_id,
        status=status.value,
        assignee_agent_id=assignee,
        repository_id=repo,
        priority=data.priority,
        blocked_by=list(data.blocked_by),
        blocks=False,  # nothing names it yet: its end needs no look for tasks it unblocks
        run_brief=no_run_ended(),  # no run ended yet: a run's end adds its cost without reading the others
        auto_ready=data.status == "ready",
        created_by=actor,
        **extra,
    )
    return doc


async def store(doc: Task) -> None:
    await insert_grouped(doc)  # with the tasks concurrent requests create
    written.keep(Task, doc.id, doc)  # its next move starts from it without reading it back


async def update(task_id: str, data: TaskUpdate) -> Task:
    task = await get(task_id)
    fields: JsonObject = {}
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
        await blocker_statuses(data.blocked_by, self_id=task.id, declared=True)
        fields["blocked_by"] = list(data.blocked_by)
    updated = await update_versioned(Task, task.id, lambda _: fields)
    return updated or task

"""Retrying an ended run: a new run of the same task, same pinned agent revision and config."""

from nexus.core_api.context import Context
from nexus.core_api.runs.dispatch import command_launch
from nexus.core_api.tasks.service import _publish as publish_task
from nexus.db.connection import update_versioned
from nexus.db.documents import Run, Task
from nexus.domain.ids import new_id
from nexus.domain.tasks import TaskStatus


async def retry_run(ctx: Context, old: Run) -> Run:
    run_id = new_id("run")
    session_id = new_id("ses")
    config = dict(old.config)
    config.update(run_id=run_id, session_id=session_id)
    if config.get("repo"):
        config["repo"] = {**config["repo"], "branch": f"nexus/{old.task_id}/{run_id}"}
    run = Run(
        id=run_id, task_id=old.task_id, agent_id=old.agent_id, agent_revision=old.agent_revision, goal_id=old.goal_id,
        session_id=session_id, parent_session_id=old.parent_session_id, parent_run_id=old.parent_run_id,
        config=config, max_attempts=old.max_attempts, priority=old.priority,
    )
    await run.insert()
    task = await update_versioned(
        Task, old.task_id, lambda t: {"status": TaskStatus.IN_PROGRESS.value, "current_run_id": run_id}
    )
    if task is not None:
        await publish_task(ctx, "task.status_changed", task)
    await command_launch(ctx, run)
    return run

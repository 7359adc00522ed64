"""board's NATS handler: what core-api does when board-sync reports a card cancelled on an external board."""

import logging

from faststream.nats import NatsBroker

from nexus.core_api.commands import command
from nexus.core_api.context import Context
from nexus.core_api.tasks import service as tasks
from nexus.core_api.workflow import engine
from nexus.db.documents import AuditEntry, Run
from nexus.domain.ids import new_id
from nexus.domain.runs import RUN_FINAL, RunStatus
from nexus.domain.tasks import TASK_FINAL, TaskStatus, can_move_task
from nexus.events.consumer import Delivery
from nexus.events.payloads import CancelTask

log = logging.getLogger("nexus.core_api.board")


async def cancel_task(ctx: Context, cmd: CancelTask) -> None:
    """Cancel the task (and its running run), audited with the provider and the person who did it.
    A task already at its end stays as it is; a redelivered command changes nothing twice."""
    task = await tasks.get(cmd.task_id)
    if TaskStatus(task.status) in TASK_FINAL or not can_move_task(TaskStatus(task.status), TaskStatus.CANCELLED):
        log.info("task %s is %s: the external cancel changes nothing", task.id, task.status)
        return
    moved = await engine.move_task(ctx, task.id, TaskStatus.CANCELLED)
    run = await Run.get(moved.current_run_id) if moved.current_run_id else None
    if run is not None and RunStatus(run.status) not in RUN_FINAL:
        await engine.cancel_run(ctx, run.id, f"cancelled on {cmd.provider} by {cmd.actor or 'someone'}")
    await AuditEntry(
        id=new_id("aud"),
        actor=f"{cmd.provider}:{cmd.actor}",
        actor_name=cmd.actor or cmd.provider,
        action="task.cancelled",
        resource=f"tasks/{task.id}",
        before_id=task.id,
        after_id=task.id,
    ).insert()


async def on_cancel_task(ctx: Context, d: Delivery) -> None:
    assert isinstance(d.payload, CancelTask)
    await cancel_task(ctx, d.payload)


def subscribe(broker: NatsBroker, ctx: Context) -> None:
    command(broker, ctx, "core.cancel_task")(on_cancel_task)

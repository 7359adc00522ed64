"""Meta sessions: a meta run's plan becomes child tasks (each a run with parentSessionId set), and
each child's end is reported back on the meta run's own subject, where the meta runner waits."""

import logging

import msgspec

from nexus.core_api.context import Context
from nexus.core_api.budgets.service import shares_for
from nexus.core_api.errors import DomainError
from nexus.core_api.goals.lifecycle import reconcile
from nexus.core_api.runs.dispatch import dispatch_task
from nexus.core_api.tasks.schemas import TaskCreate
from nexus.core_api.tasks.service import create as create_task
from nexus.db.documents import Run, Task
from nexus.domain.budgets import Cap
from nexus.events.payloads import ChildFinished, ChildPlan, PlanChildren

log = logging.getLogger("nexus.core_api.meta")


async def plan_children(ctx: Context, cmd: PlanChildren) -> list[Task]:
    parent = await Run.get(cmd.run_id)
    if parent is None:
        raise ValueError(f"plan for unknown run {cmd.run_id}")
    parent_task = await Task.get(parent.task_id)
    created: list[Task] = []
    # The goal's budget (what is left of it) is split among the children planned together.
    shares = await shares_for(parent.goal_id, [c.weight for c in cmd.children])
    for child, share in zip(cmd.children, shares, strict=True):
        existing = await Task.find_one({"session_id": child.session_id})
        if existing is not None:  # a redelivered plan creates nothing twice
            created.append(existing)
            continue
        try:
            task = await _create_child(ctx, parent, parent_task, cmd.session_id, child, share)
        except DomainError as exc:  # e.g. the plan names an agent that does not exist
            log.warning("meta run %s: child %s cannot be planned: %s", parent.id, child.session_id, exc.detail)
            await _report_unplannable(ctx, parent, child.session_id, exc.detail)
            continue
        created.append(task)
        await dispatch_task(ctx, task)
    log.info("meta run %s planned %d children", parent.id, len(created))
    await reconcile(ctx, parent.goal_id)
    return created


async def _create_child(
    ctx: Context, parent: Run, parent_task: Task | None, meta_session_id: str, child: ChildPlan, share: Cap
) -> Task:
    return await create_task(
        ctx,
        TaskCreate(
            title=child.title,
            description=child.description,
            goal_id=parent.goal_id,
            assignee=child.agent_id or parent.agent_id,
            repository=parent_task.repository_id if parent_task else None,
        ),
        actor=f"run:{parent.id}",
        parent_run_id=parent.id,
        parent_session_id=meta_session_id,
        session_id=child.session_id,
        target_files=list(child.target_files),
        budget=msgspec.to_builtins(share), budget_weight=child.weight,
    )


async def _report_unplannable(ctx: Context, parent: Run, session_id: str, reason: str) -> None:
    """The meta session waits for every child it planned: one that cannot exist ends at once, failed."""
    await ctx.publisher.publish(
        "run.child_finished",
        ChildFinished(session_id=session_id, run_id="", task_id="", status="failed", reason=f"not planned: {reason}"),
        run_id=parent.id,
    )


async def on_child_finished(ctx: Context, run: Run) -> None:
    if not run.parent_run_id:
        return
    await ctx.publisher.publish(
        "run.child_finished",
        ChildFinished(
            session_id=run.session_id,
            run_id=run.id,
            task_id=run.task_id,
            status=run.status,
            summary=run.summary,
            reason=run.reason,
        ),
        run_id=run.parent_run_id,
        msg_id=None,
    )

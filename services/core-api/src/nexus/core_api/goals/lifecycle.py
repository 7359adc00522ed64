"""A goal follows its work: each task or run event re-derives the goal's status from what its tasks
reached (nexus.domain.goals), and a move is a compare-and-set on the status it read, so the same
event twice, or two events at once, move the goal once. Only a user cancels a goal."""

import logging

from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError, not_found
from nexus.core_api.goals.budget import spent_note
from nexus.core_api.goals.report import finish
from nexus.db.documents import Goal, Task, now
from nexus.db.writes import update_document
from nexus.domain.goals import (
    GOAL_FINAL,
    GoalStatus,
    GoalTransitionRefused,
    GoalWork,
    check_goal_move,
    next_goal_status,
)
from nexus.domain.json_types import JsonObject
from nexus.domain.tasks import TASK_FINAL, TaskStatus
from nexus.events.payloads import GoalChanged

log = logging.getLogger("nexus.core_api.goals")


async def work_of(goal_id: str) -> tuple[GoalWork, list[Task]]:
    tasks = await Task.find({"goal_id": goal_id}).sort("+created_at").to_list()
    meta = next((t for t in tasks if t.is_meta), None)
    work = GoalWork(meta_status=meta.status if meta else None, children=tuple(t.status for t in tasks if not t.is_meta))
    return work, tasks


async def _move(ctx: Context, goal: Goal, target: GoalStatus, reason: str) -> bool:
    """Compare-and-set from the status read; True when this caller made the move (and announced it)."""
    fields: JsonObject = {"status": target.value, "status_reason": reason, "updated_at": now()}
    if target in GOAL_FINAL:
        fields["ended_at"] = fields["updated_at"]
    res = await update_document(Goal, goal.id, {"$set": fields}, {"status": goal.status})
    if res.modified_count != 1:
        return False
    log.info("goal %s: %s → %s (%s)", goal.id, goal.status, target.value, reason)
    await ctx.publisher.publish(
        "goal.status_changed",
        GoalChanged(
            goal_id=goal.id,
            title=goal.title,
            status=target.value,
            previous=goal.status,
            reason=reason,
            summary=reason,
            meta_run_id=goal.meta_run_id or "",
        ),
        correlation_id=goal.id,
    )
    return True


async def reconcile(ctx: Context, goal_id: str | None) -> None:
    """Move the goal where its work says it is; when that ends it, store and emit its report."""
    if not goal_id:
        return
    for _ in range(4):  # another writer moved it between our read and our write: read again
        goal = await Goal.get(goal_id)
        if goal is None:
            return
        work, tasks = await work_of(goal_id)
        if GoalStatus(goal.status) in GOAL_FINAL:
            # Ended (a report not yet stored is written now), once nothing of it is still going:
            # a cancel reports after the last of its runs is cancelled.
            if goal.report is None and all(TaskStatus(t.status) in TASK_FINAL for t in tasks):
                break
            return
        move = next_goal_status(GoalStatus(goal.status), work)
        if move is None:
            return
        if move[0] in GOAL_FINAL and (spent := await spent_note(tasks)):
            move = (move[0], f"{move[1]}: {spent}")  # "3 of 3 child tasks failed" alone hid the budget
        if await _move(ctx, goal, *move):
            if move[0] not in GOAL_FINAL:
                return
            break
    await finish(ctx, goal_id)


async def cancel_goal(ctx: Context, goal_id: str, by: str) -> list[Task]:
    """A user ends the goal: cancelled at once (409 naming the rule when it already ended); its
    tasks are returned for the workflow to cancel (`workflow.engine.cancel_goal`)."""
    for _ in range(4):
        goal = await Goal.get(goal_id)
        if goal is None:
            raise not_found("goal", goal_id)
        try:
            check_goal_move(GoalStatus(goal.status), GoalStatus.CANCELLED)
        except GoalTransitionRefused as exc:
            raise DomainError(409, str(exc), field="status") from None
        held = await spent_note((await work_of(goal_id))[1])  # work a spent budget held back, said too
        if await _move(ctx, goal, GoalStatus.CANCELLED, f"cancelled by {by}" + (f": {held}" if held else "")):
            break
    else:
        raise DomainError(409, f"goal {goal_id} changed while being cancelled; try again", field="status")
    _, tasks = await work_of(goal_id)
    return tasks

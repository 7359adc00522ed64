"""A goal's budget: set or raised by an admin or lead; a raise lets the work it held back run. When the
goal ends, what its budgets stopped is said in its reason."""

import msgspec

from nexus.core_api.budgets.service import shares_for, spent_budget
from nexus.core_api.budgets.spend import of_task
from nexus.core_api.errors import DomainError, not_found
from nexus.db.documents import Goal, Run, Task, now
from nexus.db.run_configs import config_of
from nexus.db.writes import update_document
from nexus.domain.budgets import BUDGET_EXCEEDED, Cap
from nexus.domain.goals import GOAL_FINAL, RULES, GoalStatus
from nexus.domain.tasks import TaskStatus


async def set_budget(goal_id: str, cap: Cap) -> Goal:
    """The new cap, and the children's shares re-split; releasing the work it held back is the caller's."""
    goal = await Goal.get(goal_id)
    if goal is None:
        raise not_found("goal", goal_id)
    if GoalStatus(goal.status) in GOAL_FINAL:
        raise DomainError(409, f"the budget of a {goal.status} goal does not change: {RULES['final']}", field="status")
    # A new cap is a new budget: its alerts may be said again. Children's shares stay as planned;
    # a share that is spent is raised with the goal (it is re-split among the children still waiting).
    await update_document(
        Goal, goal_id, {"$set": {"budget": msgspec.to_builtins(cap), "budget_alerts": {}, "updated_at": now()}}
    )
    await _reshare_waiting(goal_id)
    return await Goal.get(goal_id)  # type: ignore[return-value]  # written just above: it exists


async def _reshare_waiting(goal_id: str) -> None:
    """Children a spent share held back get an even part of what the goal now has left."""
    waiting = await Task.find({"goal_id": goal_id, "status": TaskStatus.READY.value, "blocked": {"$gt": ""}}).to_list()
    waiting = [t for t in waiting if t.budget]
    if not waiting:
        return
    for task, part in zip(waiting, await shares_for(goal_id, [t.budget_weight for t in waiting]), strict=True):
        used = await of_task(task.id)  # what it already spent stays counted against its share
        share = Cap(
            usd=None if part.usd is None else used.usd + part.usd,
            tokens=None if part.tokens is None else used.tokens + part.tokens,
        )
        await update_document(Task, task.id, {"$set": {"budget": msgspec.to_builtins(share)}})


async def spent_note(tasks: list[Task]) -> str:
    """Why the goal's work stopped on money, for its final reason: each task whose run a budget stopped
    (`budget_exceeded`), with the budget and how much of it was spent, and each task a spent budget held
    back ("blocked: budget …"). "" when no budget stopped anything."""
    stopped = [t for t in tasks if t.status == TaskStatus.FAILED.value and t.current_run_id]
    runs = {r.id: r for r in await Run.find({"_id": {"$in": [t.current_run_id for t in stopped]}}).to_list()}
    spent: list[str] = []
    count = 0
    for task in stopped:
        run = runs.get(task.current_run_id or "")
        if run is None or run.reason != BUDGET_EXCEEDED:
            continue
        count += 1
        limit = ((await config_of(run.id) or {}).get("limits") or {}).get("max_cost_usd")
        what = await spent_budget(task, run.id, limit) or "its budget"
        if what not in spent:
            spent.append(what)
    held = [t.blocked for t in tasks if t.blocked]
    notes = []
    if count:
        notes.append(f"{count} stopped by a spent budget ({'; '.join(spent)})")
    if held:
        notes.append(f"{len(held)} held back by a spent budget ({'; '.join(dict.fromkeys(held))})")
    return ", ".join(notes)

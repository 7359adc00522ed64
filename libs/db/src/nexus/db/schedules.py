"""Reads about schedules that both core-api (firing) and the worker (its clock) make."""

from nexus.db.documents import Goal, Task
from nexus.domain.tasks import TASK_FINAL

_TASK_FINAL = [s.value for s in TASK_FINAL]
_GOAL_ENDED = ("done", "failed", "cancelled", "closed")


async def occurrence_active(kind: str, item_id: str | None) -> bool:
    """Is the goal or task an occurrence created still running (the overlap policy's question)?"""
    if not item_id:
        return False
    if kind == "goal":
        goal = await Goal.get(item_id)
        if goal is None or goal.status in _GOAL_ENDED:
            return False
        return await Task.find({"goal_id": item_id, "status": {"$nin": _TASK_FINAL}}).count() > 0
    task = await Task.get(item_id)
    return task is not None and task.status not in _TASK_FINAL

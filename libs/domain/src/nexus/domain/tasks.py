"""The task state machine: backlog → ready → in_progress → in_review → done | failed | cancelled."""

from enum import StrEnum


class TaskStatus(StrEnum):
    BACKLOG = "backlog"
    READY = "ready"
    IN_PROGRESS = "in_progress"
    IN_REVIEW = "in_review"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TASK_FINAL = frozenset({TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED})

_TASK_MOVES: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.BACKLOG: frozenset({TaskStatus.READY, TaskStatus.CANCELLED}),
    TaskStatus.READY: frozenset({TaskStatus.IN_PROGRESS, TaskStatus.BACKLOG, TaskStatus.CANCELLED}),
    TaskStatus.IN_PROGRESS: frozenset(
        {TaskStatus.IN_REVIEW, TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.READY}
    ),
    TaskStatus.IN_REVIEW: frozenset({TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.IN_PROGRESS, TaskStatus.CANCELLED}),
    TaskStatus.DONE: frozenset(),
    TaskStatus.FAILED: frozenset({TaskStatus.READY}),
    TaskStatus.CANCELLED: frozenset(),
}


class InvalidTransition(ValueError):
    def __init__(self, kind: str, current: str, target: str) -> None:
        super().__init__(f"{kind} cannot move from {current} to {target}")
        self.current = current
        self.target = target


def can_move_task(current: TaskStatus, target: TaskStatus) -> bool:
    return target in _TASK_MOVES[current]


def check_task_move(current: TaskStatus, target: TaskStatus) -> None:
    if not can_move_task(current, target):
        raise InvalidTransition("task", current, target)


def blockers_done(blocker_statuses: list[TaskStatus]) -> bool:
    """A task becomes ready only when every task blocking it is done."""
    return all(s == TaskStatus.DONE for s in blocker_statuses)

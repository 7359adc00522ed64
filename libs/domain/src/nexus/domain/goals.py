"""The goal state machine: open → planning → in_progress → done | failed | cancelled.

A goal's status is derived from what its work reached (the meta task and the child tasks), so
the same facts seen twice, or in another order, move it to the same place; only a user cancels."""

from enum import StrEnum

import msgspec


class GoalStatus(StrEnum):
    OPEN = "open"
    PLANNING = "planning"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


GOAL_FINAL = frozenset({GoalStatus.DONE, GoalStatus.FAILED, GoalStatus.CANCELLED})

# Each allowed move, with the rule a refused move is told about.
_GOAL_MOVES: dict[GoalStatus, frozenset[GoalStatus]] = {
    GoalStatus.OPEN: frozenset(
        {GoalStatus.PLANNING, GoalStatus.IN_PROGRESS, GoalStatus.DONE, GoalStatus.FAILED, GoalStatus.CANCELLED}
    ),
    GoalStatus.PLANNING: frozenset({GoalStatus.IN_PROGRESS, GoalStatus.DONE, GoalStatus.FAILED, GoalStatus.CANCELLED}),
    GoalStatus.IN_PROGRESS: frozenset({GoalStatus.DONE, GoalStatus.FAILED, GoalStatus.CANCELLED}),
    GoalStatus.DONE: frozenset(),
    GoalStatus.FAILED: frozenset(),
    GoalStatus.CANCELLED: frozenset(),
}
RULES = {
    "final": "a goal that is done, failed or cancelled does not change again",
    "backwards": "a goal never moves back (open → planning → in_progress → done/failed/cancelled)",
}


class GoalTransitionRefused(ValueError):
    def __init__(self, current: str, target: str, rule: str) -> None:
        super().__init__(f"goal cannot move from {current} to {target}: {RULES[rule]}")
        self.current, self.target, self.rule = current, target, rule


def check_goal_move(current: GoalStatus, target: GoalStatus) -> None:
    if target in _GOAL_MOVES[current]:
        return
    raise GoalTransitionRefused(current, target, "final" if current in GOAL_FINAL else "backwards")


class GoalWork(msgspec.Struct, frozen=True, kw_only=True):
    """What a goal's status is derived from: its meta task (when a meta session plans it) and the rest."""

    meta_status: str | None = None  # the meta task's status; None: no meta task (yet)
    children: tuple[str, ...] = ()  # each child task's status


_TASK_FINAL = frozenset({"done", "failed", "cancelled"})


def derive_goal_status(work: GoalWork) -> tuple[GoalStatus, str]:
    """Where the work says the goal is, and the rule that says so. The goal ends once none of its
    work is still going: failed when the plan or a child failed beyond its retries, else done."""
    every = ((work.meta_status,) if work.meta_status else ()) + work.children
    if not every:
        return GoalStatus.OPEN, "nothing planned yet"
    if all(s in _TASK_FINAL for s in every):
        if work.meta_status in ("failed", "cancelled"):
            return GoalStatus.FAILED, f"planning {work.meta_status}"
        failed = sum(s == "failed" for s in work.children)
        if failed:
            return GoalStatus.FAILED, f"{failed} of {len(work.children)} child tasks failed"
        if work.children and "done" not in work.children:
            return GoalStatus.FAILED, "every child task was cancelled"
        return (
            GoalStatus.DONE,
            f"every child task done ({len(work.children)})" if work.children else "planned nothing to do",
        )
    if work.children:
        return GoalStatus.IN_PROGRESS, f"{len(work.children)} child tasks planned"
    return GoalStatus.PLANNING, "its meta session is planning"


def next_goal_status(current: GoalStatus, work: GoalWork) -> tuple[GoalStatus, str] | None:
    """The move the work asks for and why, or None: a final goal stays, and a goal never moves back."""
    if current in GOAL_FINAL:
        return None
    target, why = derive_goal_status(work)
    if target == current or target not in _GOAL_MOVES[current]:
        return None
    return target, why

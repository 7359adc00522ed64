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
    GoalStatus.OPEN: frozenset({GoalStatus.PLANNING, GoalStatus.IN_PROGRESS, GoalStatus.DONE, GoalStatus.FAILED, GoalStatus.CANCELLED}),
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
    """What a goal's status is derived from: the meta task (when the goal is planned) and the rest."""

    has_meta: bool = False
    meta_status: str | None = None  # the meta task's status
    children: tuple[str, ...] = ()  # each child task's status


def derive_goal_status(work: GoalWork) -> GoalStatus:
    """Where the work says the goal is. Failed as soon as the plan or a child failed beyond its
    retries; done when the plan (if any) and every child are done."""
    children = work.children
    if work.meta_status == "failed" or "failed" in children:
        return GoalStatus.FAILED
    meta_done = not work.has_meta or work.meta_status == "done"
    if children and meta_done and all(s in ("done", "cancelled") for s in children) and "done" in children:
        return GoalStatus.DONE
    if work.has_meta and meta_done and not children:
        return GoalStatus.DONE  # a plan with nothing to do
    if children:
        return GoalStatus.IN_PROGRESS
    if work.has_meta and work.meta_status in ("in_progress", "in_review"):
        return GoalStatus.PLANNING
    if work.has_meta and work.meta_status == "cancelled":
        return GoalStatus.FAILED
    return GoalStatus.OPEN


def next_goal_status(current: GoalStatus, work: GoalWork) -> GoalStatus | None:
    """The move the work asks for, or None: a final goal stays, and a goal never moves back."""
    if current in GOAL_FINAL:
        return None
    target = derive_goal_status(work)
    if target == current or target not in _GOAL_MOVES[current]:
        return None
    return target

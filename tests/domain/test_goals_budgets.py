"""The goal state machine and budget arithmetic, as pure functions."""

import pytest

from nexus.domain.budgets import Cap, Spend, call_cost, split, would_exceed
from nexus.domain.goals import (
    GoalStatus,
    GoalTransitionRefused,
    GoalWork,
    check_goal_move,
    derive_goal_status,
    next_goal_status,
)

S = GoalStatus


@pytest.mark.parametrize(
    ("work", "status"),
    [
        (GoalWork(), S.OPEN),
        (GoalWork(meta_status="in_progress"), S.PLANNING),
        (GoalWork(meta_status="in_progress", children=("ready", "in_progress")), S.IN_PROGRESS),
        (GoalWork(meta_status="in_progress", children=("done", "done")), S.IN_PROGRESS),  # the plan still runs
        (GoalWork(meta_status="done", children=("done", "done", "done")), S.DONE),
        (GoalWork(meta_status="done", children=("done", "failed", "done")), S.FAILED),
        (
            GoalWork(meta_status="in_progress", children=("failed", "in_progress")),
            S.IN_PROGRESS,
        ),  # ends when the work does
        (GoalWork(meta_status="failed"), S.FAILED),
        (GoalWork(meta_status="done"), S.DONE),
        (GoalWork(children=("done",)), S.DONE),  # a goal without a meta session: its tasks decide
    ],
)
def test_status_follows_the_work(work: GoalWork, status: GoalStatus) -> None:
    assert derive_goal_status(work)[0] == status


def test_moves_are_forward_only_and_final_is_final() -> None:
    assert next_goal_status(S.OPEN, GoalWork(meta_status="in_progress")) == (S.PLANNING, "its meta session is planning")
    assert next_goal_status(S.PLANNING, GoalWork(meta_status="in_progress")) is None  # the same fact twice: no move
    assert next_goal_status(S.IN_PROGRESS, GoalWork(meta_status="in_progress")) is None  # never back to planning
    assert next_goal_status(S.DONE, GoalWork(meta_status="failed")) is None
    check_goal_move(S.IN_PROGRESS, S.CANCELLED)
    with pytest.raises(
        GoalTransitionRefused, match="done to cancelled: a goal that is done, failed or cancelled does not change"
    ):
        check_goal_move(S.DONE, S.CANCELLED)
    with pytest.raises(GoalTransitionRefused, match="never moves back"):
        check_goal_move(S.IN_PROGRESS, S.PLANNING)


def test_split_even_and_weighted_never_more_than_the_total() -> None:
    assert split(Cap(usd=3.0, tokens=1000), [1, 1, 1]) == [Cap(usd=1.0, tokens=333)] * 3
    weighted = split(Cap(usd=4.0, tokens=1000), [1, 3])
    assert weighted == [Cap(usd=1.0, tokens=250), Cap(usd=3.0, tokens=750)]
    assert split(Cap(tokens=10), [1, 1, 1]) == [Cap(tokens=3)] * 3
    assert split(Cap(), [1, 2]) == [Cap(), Cap()]


def test_the_check_before_a_call() -> None:
    cap = Cap(usd=1.0, tokens=1000)
    assert not would_exceed(cap, Spend(usd=0.5, tokens=500), Spend(usd=0.5, tokens=500))
    assert would_exceed(cap, Spend(usd=0.5, tokens=500), Spend(usd=0.0, tokens=501))
    assert would_exceed(cap, Spend(usd=0.9), Spend(usd=0.2))
    assert not would_exceed(Cap(), Spend(usd=1e9, tokens=10**9), Spend(usd=1.0, tokens=1))
    assert cap.left(Spend(usd=2.0, tokens=10)) == Cap(usd=0.0, tokens=990)
    assert cap.exhausted(Spend(tokens=1000)) and not cap.exhausted(Spend(tokens=999))
    assert Cap(usd=2.0).tightest(Cap(usd=1.0, tokens=5)) == Cap(usd=1.0, tokens=5)
    assert call_cost((2.0, 10.0), 1_000_000, 100_000) == pytest.approx(3.0)
    assert call_cost(None, 10, 10) == 0.0

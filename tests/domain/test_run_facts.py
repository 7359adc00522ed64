"""A run's state converges whatever order its events arrive in (shuffled, duplicated, delayed)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.domain.run_facts import RuntimeFact, StatusFact, derive, record

MAX_ATTEMPTS = 3
FINALS = ["succeeded", "failed", "timed_out", "cancelled"]


@st.composite
def histories(draw):
    """What really happened to one run, in stream order, and the final status it must end in.
    Each attempt launches, runs (maybe pausing for approval), then either gives its verdict and
    exits, or dies without one (exit, lost, launch failure) and is retried while attempts remain."""
    events: list = []
    seq = 0

    def nxt() -> int:
        nonlocal seq
        seq += 1
        return seq

    for n in range(1, MAX_ATTEMPTS + 1):
        ending = draw(st.sampled_from(["verdict", "verdict", "exited", "lost", "launch_failed"]))
        if ending == "launch_failed":
            events.append(RuntimeFact(n, nxt(), "launch_failed", "no slot"))
        else:
            events.append(RuntimeFact(n, nxt(), "launched", "pid 1", runtime="local"))
            events.append(StatusFact(n, nxt(), "running"))
            for _ in range(draw(st.integers(0, 2))):
                events.append(StatusFact(n, nxt(), "waiting_approval"))
                events.append(StatusFact(n, nxt(), "running"))
            if ending == "verdict":
                verdict = draw(st.sampled_from(FINALS))
                if draw(st.booleans()):  # the worker's deadline spoke first; the runner's word comes too late
                    events.append(StatusFact(n, nxt(), "timed_out", "deadline"))
                    events.append(StatusFact(n, nxt(), verdict))
                    verdict = "timed_out"
                else:
                    events.append(StatusFact(n, nxt(), verdict))
                events.append(RuntimeFact(n, nxt(), "exited", "code 0"))
                return events, verdict
            events.append(RuntimeFact(n, nxt(), ending, "gone"))
    return events, "failed"


def fold(events) -> list[dict]:
    attempts: list[dict] = []
    for e in events:
        attempts = record(attempts, e)
    return attempts


@settings(deadline=None, max_examples=400)
@given(data=histories(), rnd=st.randoms(use_true_random=False))
def test_final_state_is_the_same_in_any_order_with_duplicates(data, rnd) -> None:
    events, expected = data
    in_order = derive(fold(events), MAX_ATTEMPTS)
    assert in_order.status == expected

    delivered = list(events) + [rnd.choice(events) for _ in range(rnd.randint(0, len(events)))]
    rnd.shuffle(delivered)
    shuffled = derive(fold(delivered), MAX_ATTEMPTS)
    assert (shuffled.status, shuffled.attempt, shuffled.reason) == (in_order.status, in_order.attempt, in_order.reason)


@settings(deadline=None, max_examples=200)
@given(data=histories(), cut=st.integers(0, 10_000), rnd=st.randoms(use_true_random=False))
def test_delayed_events_catch_up(data, cut, rnd) -> None:
    """A crashed consumer's fetched events come back after newer ones: any prefix held back and
    delivered last (in any order) ends in the same state."""
    events, expected = data
    k = cut % (len(events) + 1)
    held, rest = events[:k], events[k:]
    rnd.shuffle(held)
    assert derive(fold(rest + held), MAX_ATTEMPTS).status == expected


def test_verdict_wins_over_lagging_launched_and_running() -> None:
    attempts = fold([StatusFact(1, 5, "succeeded"), RuntimeFact(1, 6, "exited", "code 0")])
    assert derive(attempts, MAX_ATTEMPTS).status == "succeeded"
    late = fold(
        [
            StatusFact(1, 5, "succeeded"),
            RuntimeFact(1, 6, "exited"),
            RuntimeFact(1, 1, "launched"),
            StatusFact(1, 2, "running"),
        ]
    )
    assert derive(late, MAX_ATTEMPTS).status == "succeeded"


def test_an_exit_after_a_verdict_never_starts_a_retry() -> None:
    view = derive(fold([RuntimeFact(1, 9, "exited", "code 0"), StatusFact(1, 8, "succeeded")]), MAX_ATTEMPTS)
    assert (view.status, view.attempt) == ("succeeded", 1)


def test_an_exit_after_its_attempts_verdict_is_not_recorded() -> None:
    """The run's end is decided: the exit heard after it adds nothing, so it costs no write."""
    decided = fold([RuntimeFact(1, 1, "launched"), StatusFact(1, 2, "running"), StatusFact(1, 3, "succeeded")])
    assert record(decided, RuntimeFact(1, 4, "exited", "code 0")) is decided
    assert record(decided, RuntimeFact(1, 4, "lost", "silent")) is decided
    # Another attempt's exit is still recorded.
    assert record(decided, RuntimeFact(2, 5, "exited", "code 1")) is not decided


def test_an_exit_without_a_verdict_retries_then_fails() -> None:
    view = derive(fold([RuntimeFact(1, 1, "launched"), RuntimeFact(1, 2, "exited", "code 137")]), 2)
    assert (view.status, view.attempt) == ("queued", 2)
    view = derive(fold([RuntimeFact(1, 2, "exited", "code 137"), RuntimeFact(2, 4, "lost", "silent")]), 2)
    assert view.status == "failed" and "after 2 attempts" in view.reason


def test_a_stale_status_does_not_move_an_attempt_back() -> None:
    attempts = fold([StatusFact(1, 4, "waiting_approval"), StatusFact(1, 2, "running")])
    assert derive(attempts, MAX_ATTEMPTS).status == "waiting_approval"


def test_recording_a_duplicate_changes_nothing() -> None:
    attempts = fold([RuntimeFact(1, 1, "launched", "pid 1", runtime="local"), StatusFact(1, 2, "running")])
    assert record(attempts, StatusFact(1, 2, "running")) is attempts
    assert record(attempts, RuntimeFact(1, 1, "launched", "pid 1", runtime="local")) is attempts


def test_attempts_stored_before_facts_still_derive() -> None:
    legacy = [{"n": 1, "status": "failed", "reason": "lost: silent"}, {"n": 2, "status": "succeeded", "reason": ""}]
    assert derive(legacy, MAX_ATTEMPTS).status == "succeeded"
    assert derive(record(legacy, StatusFact(2, 9, "running")), MAX_ATTEMPTS).status == "succeeded"

"""What the worker heard from runners outlives a sweep that started before it: a run launched and
ended during one sweep (not in that sweep's list yet) must not then be declared lost for silence."""

from datetime import UTC, datetime, timedelta

from nexus.worker.recovery import Sightings


def test_prune_keeps_what_was_heard_after_the_sweep_began() -> None:
    s = Sightings()
    sweep_began = datetime.now(UTC)
    s.seen = {
        ("run_old", 1): sweep_began - timedelta(seconds=5),
        ("run_new", 1): sweep_began + timedelta(seconds=1),
        ("run_live", 1): sweep_began - timedelta(seconds=5),
    }
    s.ended = {("run_old", 1): sweep_began - timedelta(seconds=5), ("run_new", 1): sweep_began + timedelta(seconds=1)}
    s.prune({"run_live"}, sweep_began)
    assert set(s.seen) == {("run_new", 1), ("run_live", 1)}  # the old, inactive one is forgotten
    assert ("run_new", 1) in s.ended and ("run_old", 1) not in s.ended
    s.prune(set(), sweep_began + timedelta(seconds=2))  # the next sweep, which would have listed it
    assert not s.seen and not s.ended

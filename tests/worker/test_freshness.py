"""When a launch may be taken as current without reading its run: only on its first delivery, for a run
no cancel was heard of, stored long enough after this worker began hearing every cancel (and after its
last reconnect), while it still remembers every cancel heard since then."""

from nexus.worker.freshness import Freshness


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def listening(clock: Clock, **kwargs) -> tuple[Freshness, dict[str, int | bool]]:
    conn: dict[str, int | bool] = {"reconnects": 0, "connected": True}
    f = Freshness(
        margin_s=10,
        clock=clock,
        reconnects=lambda: int(conn["reconnects"]),
        connected=lambda: bool(conn["connected"]),
        **kwargs,
    )
    f.listening()
    return f, conn


def test_a_first_delivery_stored_after_the_margin_is_fresh() -> None:
    clock = Clock()
    f, _ = listening(clock)
    clock.now += 60
    assert f.fresh("run_a", clock.now - 1, 1)
    assert not f.fresh("run_a", clock.now - 1, 2)  # a redelivery: a worker had it
    assert not f.fresh("run_a", None, 1)  # when it was stored is unknown
    assert not f.fresh("run_a", clock.now - 1, None)


def test_a_launch_stored_before_every_cancel_was_heard_is_not() -> None:
    clock = Clock()
    f, _ = listening(clock)
    assert not Freshness(clock=clock).fresh("run_a", clock.now, 1)  # never listening
    clock.now += 5
    assert not f.fresh("run_a", clock.now, 1)  # within the margin of the subscription
    clock.now += 6
    assert f.fresh("run_a", clock.now, 1)
    assert not f.fresh("run_a", clock.now - 50, 1)  # stored before this worker listened


def test_a_cancel_heard_makes_its_runs_launches_read() -> None:
    clock = Clock()
    f, _ = listening(clock)
    clock.now += 60
    f.heard_cancel("run_a")
    assert not f.fresh("run_a", clock.now, 1)
    assert f.was_cancelled("run_a")
    assert f.fresh("run_b", clock.now, 1)


def test_a_reconnect_or_a_lost_connection_starts_the_margin_again() -> None:
    clock = Clock()
    f, conn = listening(clock)
    clock.now += 60
    conn["connected"] = False
    assert not f.fresh("run_a", clock.now, 1)
    conn["connected"] = True
    conn["reconnects"] = 1  # cancels published while it was away were never heard
    assert not f.fresh("run_a", clock.now, 1)
    clock.now += 11
    assert f.fresh("run_a", clock.now, 1)
    assert not f.fresh("run_b", clock.now - 12, 1)  # stored before the reconnect's margin


def test_forgetting_a_cancel_moves_what_is_known_complete() -> None:
    clock = Clock()
    f, _ = listening(clock, remember_s=100, capacity=2)
    clock.now += 50
    f.heard_cancel("run_a")
    heard_a = clock.now
    clock.now += 101  # run_a's cancel is forgotten: launches stored up to its margin are read again
    assert f.fresh("run_new", clock.now, 1)
    assert not f.was_cancelled("run_a")
    assert not f.fresh("run_a", heard_a + 5, 1)
    assert f.fresh("run_a", heard_a + 11, 1)
    # Over capacity the oldest goes first, with the same effect.
    f.heard_cancel("run_b")
    clock.now += 1
    f.heard_cancel("run_c")
    clock.now += 1
    f.heard_cancel("run_d")
    assert not f.was_cancelled("run_b") and f.was_cancelled("run_c") and f.was_cancelled("run_d")
    assert not f.fresh("run_x", clock.now - 1, 1)  # within the margin of run_b's forgotten cancel


def test_a_clock_far_behind_the_servers_trusts_nothing() -> None:
    clock = Clock()
    f, _ = listening(clock)
    clock.now += 60
    assert not f.fresh("run_a", clock.now + 11, 1)

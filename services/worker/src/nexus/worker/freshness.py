"""Whether a launch command can be taken as current without reading its run from the database.

A launch is stale when its run has ended or moved on to a newer attempt. The only thing that ends a run
before its attempt was claimed is a cancel — and every cancel is published on the bus after the run was
stored final (`worker.cancel_run`), and every worker hears every cancel. A newer attempt needs an earlier
one to have ended, which needs a claim of that earlier one. So a launch is **fresh** — launched without
reading the run — when all of these hold:

- it is the command's first delivery (a redelivery: a worker had it and may have died mid-launch);
- no cancel of its run was heard;
- this worker heard every cancel published since `margin_s` before the command was stored: it was
  subscribed and its connection stayed up, and it still remembers what it heard then (cancels are kept
  `remember_s`, at most `capacity` of them). `margin_s` covers what may pass between core-api storing a
  run and commanding its launch (a cancel can come in between), and clock skew between the server's time
  stamp and this worker's clock;
- and its claim is new: a claim found held goes the old way (a takeover reads the run first).

Anything else reads the run (`launcher.is_stale`), as every launch did before. A cancel heard while a
launch is under way is acted on once the runner has started (the launcher checks again)."""

import time
from collections import OrderedDict
from collections.abc import Callable


class Freshness:
    def __init__(
        self,
        *,
        margin_s: float = 10.0,
        remember_s: float = 600.0,
        capacity: int = 100_000,
        clock: Callable[[], float] = time.time,
        reconnects: Callable[[], int] = lambda: 0,
        connected: Callable[[], bool] = lambda: True,
    ) -> None:
        self.margin_s = margin_s
        self.remember_s = remember_s
        self.capacity = capacity
        self.clock = clock
        self.reconnects = reconnects
        self.connected = connected
        self.cancelled: OrderedDict[str, float] = OrderedDict()  # run id -> when its cancel was heard
        self.complete_since: float | None = None  # every cancel heard from then on is remembered
        self._reconnects_seen = 0

    def listening(self) -> None:
        """Call once the cancel subscription is confirmed by the server."""
        self.complete_since = self.clock()
        self._reconnects_seen = self.reconnects()

    def heard_cancel(self, run_id: str) -> None:
        now = self.clock()
        self.cancelled[run_id] = now
        self.cancelled.move_to_end(run_id)
        self._forget(now)

    def was_cancelled(self, run_id: str) -> bool:
        return run_id in self.cancelled

    def fresh(self, run_id: str, stored_at: float | None, deliveries: int | None) -> bool:
        """True: the launch of `run_id` (stored in the stream at `stored_at`, delivered `deliveries` times)
        is current without a read of the run. False: read it."""
        now = self.clock()
        self._forget(now)
        if self.reconnects() != self._reconnects_seen:  # cancels published while it was away were missed
            self._reconnects_seen = self.reconnects()
            self.complete_since = now
        if self.complete_since is None or stored_at is None or deliveries != 1 or not self.connected():
            return False
        if run_id in self.cancelled or stored_at > now + self.margin_s:  # a clock far off: trust nothing
            return False
        return stored_at - self.margin_s >= self.complete_since

    def _forget(self, now: float) -> None:
        while self.cancelled:
            run_id, heard = next(iter(self.cancelled.items()))
            if heard >= now - self.remember_s and len(self.cancelled) <= self.capacity:
                return
            del self.cancelled[run_id]
            if self.complete_since is not None:  # what was heard up to this is no longer all remembered
                self.complete_since = max(self.complete_since, heard)

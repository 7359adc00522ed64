"""Which workers are alive: each puts a timestamp in a KV bucket every sweep. A runner launched by a
worker that stopped beating is adopted by another; one launched by a live worker is left alone."""

import re
import time

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

WORKERS_BUCKET = "nexus_workers"


def worker_key(worker_id: str) -> str:
    return re.sub(r"[^-_=.a-zA-Z0-9]", "_", worker_id)


class Membership:
    def __init__(self, kv: KeyValue, worker_id: str, *, timeout_s: float) -> None:
        self.kv = kv
        self.worker_id = worker_id
        self.timeout_s = timeout_s
        self.beat_at: float | None = None  # the time this worker's last stored beat says
        self.woke_at: float | None = None  # the last beat that ended a silence others may have judged dead

    async def beat(self) -> None:
        at = time.time()
        await self.kv.put(worker_key(self.worker_id), str(at).encode())
        if self.beat_at is not None and at - self.beat_at >= self.timeout_s / 2:
            self.woke_at = at
        self.beat_at = at

    def surely_alive(self, since: float | None = None) -> bool:
        """No other worker can have judged this one dead (now, or at any time after `since`, when it was
        surely alive too): its last stored beat is younger than half the timeout (the other half for the
        clocks of two machines to disagree), and no silence as long ended after `since`. What a worker
        that may have stood still (frozen, swapped out) checks before acting on a claim it made earlier:
        the beat that follows a thaw does not vouch for the silence before it."""
        if self.beat_at is None or time.time() - self.beat_at >= self.timeout_s / 2:
            return False
        return since is None or self.woke_at is None or self.woke_at < since

    async def alive(self, worker_id: str) -> bool:
        if worker_id == self.worker_id:
            return True
        try:
            entry = await self.kv.get(worker_key(worker_id))
        except KeyNotFoundError:
            return False
        try:
            return time.time() - float(entry.value or b"0") < self.timeout_s
        except ValueError:
            return False

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

    async def beat(self) -> None:
        await self.kv.put(worker_key(self.worker_id), str(time.time()).encode())

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

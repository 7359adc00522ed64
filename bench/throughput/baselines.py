"""Same-run baselines for the throughput bench: what a process start and a database insert cost
on this machine right now, with nothing of Nexus in the way."""

import os
import shutil
import tempfile
import time
from pathlib import Path

from pymongo import AsyncMongoClient

from nexus.dev.servers import start_ferretdb


def fork_exec_rate(n: int, *, exec_: bool = True) -> dict:
    """`os.fork` (+ exec of /bin/true) and wait, n times in a row: the floor of one process per run."""
    t0 = time.perf_counter()
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            if exec_:
                os.execv("/bin/true", ["true"])
            os._exit(0)
        os.waitpid(pid, 0)
    per = (time.perf_counter() - t0) / n
    return {"n": n, "per_op_ms": round(per * 1000, 3), "per_s": round(1 / per, 1)}


async def pymongo_insert_rate(n: int) -> dict:
    """Raw pymongo (async) inserts into a fresh FerretDB as `tools/dev` starts it: one at a time, and in one insert_many."""
    home = Path(tempfile.mkdtemp(prefix="nexus-bench-baseline-"))
    server = start_ferretdb(home / "ferretdb", log_path=home / "ferretdb.log")
    client: AsyncMongoClient = AsyncMongoClient(server.url)
    try:
        coll = client["baseline"]["docs"]
        await coll.insert_one({"_id": "warm-up"})
        t0 = time.perf_counter()
        for i in range(n):
            await coll.insert_one({"_id": f"one-{i}", "status": "queued", "attempt": 1, "payload": "x" * 200})
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        await coll.insert_many(
            [{"_id": f"many-{i}", "status": "queued", "attempt": 1, "payload": "x" * 200} for i in range(n)]
        )
        many = time.perf_counter() - t0
        return {"n": n, "insert_one_per_s": round(n / one, 1), "insert_many_docs_per_s": round(n / many, 1)}
    finally:
        await client.close()
        server.stop()
        shutil.rmtree(home, ignore_errors=True)

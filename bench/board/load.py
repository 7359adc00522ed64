"""The board benchmark's load: the bench plays core-api (writes a task's status, publishes
`task.status_changed`) at a fixed rate; board-sync projects; the Plane double records each call."""

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from nexus.db.connection import connect_db
from nexus.db.documents import Task, now
from nexus.dev.doubles.plane import PlaneDouble
from nexus.dev.servers import free_port, start_ferretdb, start_nats
from nexus.events.bus import Publisher, connect, ensure_streams
from nexus.events.catalog import DLQ_STREAM, EVENTS_STREAM
from nexus.events.payloads import TaskChanged

FLIP = {"ready": "backlog", "backlog": "ready"}
GROUP = {"ready": "unstarted", "backlog": "backlog"}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)


async def until(predicate, bound_s: float) -> bool:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.2)
    return False


class Phase:
    def __init__(self, name: str, double: PlaneDouble, scope: str, tasks: int) -> None:
        self.name = name
        self.double = double
        self.scope = scope  # the repository whose provider settings point at this double
        self.task_ids = [f"task_bench_{name}_{i}_{uuid.uuid4().hex[:6]}" for i in range(tasks)]
        self.changes: list[tuple[str, float]] = []  # (task id, when)


async def offer(pub: Publisher, phase: Phase, per_minute: float, seconds: float) -> None:
    coll = Task.get_pymongo_collection()
    status = {t: "ready" for t in phase.task_ids}
    interval = 60.0 / per_minute
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        task_id = phase.task_ids[n % len(phase.task_ids)]
        status[task_id] = FLIP[status[task_id]]
        await coll.update_one({"_id": task_id}, {"$set": {"status": status[task_id], "updated_at": now()}})
        phase.changes.append((task_id, time.time()))
        await pub.publish("task.status_changed", TaskChanged(task_id=task_id, status=status[task_id], title="bench"))
        n += 1
        await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))


def lags(phase: Phase) -> tuple[list[float], int]:
    """For each change, the time to the first write on its item after it (a later change may be
    carried by the same call: that is the point of syncing the current state). A change undone by
    the next one before any sync needs no write at all: it is counted apart."""
    item_of = {i["external_id"]: i["id"] for i in phase.double.items.values()}
    writes: dict[str, list[float]] = {}
    for method, path, at in phase.double.calls:
        if method == "PATCH":
            writes.setdefault(path.rstrip("/").rsplit("/", 1)[-1], []).append(at)
    out, missing = [], 0
    for task_id, t0 in phase.changes:
        after = [t for t in writes.get(item_of.get(task_id, ""), []) if t >= t0]
        if after:
            out.append(after[0] - t0)
        else:
            missing += 1
    return out, missing


async def run(seconds: float, tasks: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="nexus-bench-board-"))
    nats = start_nats(home / "nats", log_path=home / "nats.log")
    mongo = start_ferretdb(home / "ferretdb", log_path=home / "ferretdb.log")
    db_name = f"bench_board_{uuid.uuid4().hex[:8]}"
    limited, unlimited = PlaneDouble(), PlaneDouble(rate_limit=1_000_000)
    urls = {id(limited): limited.start(), id(unlimited): unlimited.start()}
    proc = None
    try:
        client = await connect_db(mongo.url, db_name, create_indexes=False)
        nc = await connect(nats.url, "bench-board")
        js = nc.jetstream()
        await ensure_streams(js)
        pub = Publisher(js, "core-api")
        providers = Task.get_pymongo_collection().database["board_providers"]
        phases = [
            Phase("baseline_1000", unlimited, "repo_unlimited", tasks),
            Phase("plane_100", limited, "repo_limited_100", tasks),
            Phase("plane_1000", limited, "repo_limited_1000", tasks),
        ]
        for ph in phases:
            await providers.update_one(
                {"_id": ph.scope},
                {
                    "$set": {
                        "provider": "plane",
                        "updated_at": now(),
                        "plane": {
                            "base_url": urls[id(ph.double)],
                            "workspace_slug": ph.double.workspace,
                            "project_id": ph.double.project_id,
                            "api_key_secret": "PLANE_KEY",
                            "rate_limit_per_minute": 6000 if ph.double is unlimited else 60,
                        },
                    }
                },
                upsert=True,
            )
            for t in ph.task_ids:
                await Task(id=t, title="bench", status="ready", repository_id=ph.scope).insert()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")},
            "NEXUS_NATS_URL": nats.url,
            "NEXUS_MONGODB_URL": mongo.url,
            "NEXUS_MONGODB_DB": db_name,
            "NEXUS_METRICS_PORT": str(free_port()),
            "NEXUS_METRICS_HOST": "127.0.0.1",
            "NEXUS_SECRET_PLANE_KEY": "plane_api_key",
            "NEXUS_DRIFT_INTERVAL_S": "0",
            "NEXUS_LOG_LEVEL": "warning",
        }
        log = open(home / "board-sync.log", "ab")  # noqa: SIM115 — closed when the process it is given to ends
        proc = subprocess.Popen(
            [sys.executable, "-m", "nexus.board_sync.main"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        results = {}
        for ph, per_minute in zip(phases, (1000, 100, 1000), strict=True):
            # warm-up: the items exist before the clock starts (creating them is not the measured path)
            for t in ph.task_ids:
                await pub.publish("task.created", TaskChanged(task_id=t, status="ready", title="bench"))
            await until(lambda ph=ph: _linked(ph), 600)
            calls_before = len(ph.double.calls)
            throttled_before = ph.double.throttled
            t0 = time.monotonic()
            await offer(pub, ph, per_minute, seconds)
            drained = await until(lambda ph=ph: _settled(ph, js), 600)
            drain_s = time.monotonic() - t0 - seconds
            values, missing = lags(ph)
            dlq = (await js.stream_info(DLQ_STREAM)).state.messages
            results[ph.name] = {
                "changes_per_minute": per_minute,
                "changes": len(ph.changes),
                "seconds_offered": seconds,
                "lag_p50_ms": pct(values, 0.5),
                "lag_p99_ms": pct(values, 0.99),
                "lag_max_ms": pct(values, 1.0),
                "changes_already_shown": missing,  # flipped back before a sync: the item already showed it, no write needed
                "all_handled_and_final_state_shown": drained,
                "drain_after_load_s": round(drain_s, 1),
                "provider_calls": len(ph.double.calls) - calls_before,
                "calls_per_change": round((len(ph.double.calls) - calls_before) / max(1, len(ph.changes)), 3),
                "throttled_429": ph.double.throttled - throttled_before,
                "dead_letters_total": dlq,
            }
        info = {d: (await js.consumer_info(EVENTS_STREAM, d)).num_pending for d in ("board-sync-tasks",)}
        await nc.close()
        await client.close()
        return {
            "bench": "board-sync lag",
            "plane_rate_limit_per_minute": 60,
            "tasks": tasks,
            "results": results,
            "left_pending": info,
            "note": "2 shared cores, contended by other work",
        }
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        limited.stop()
        unlimited.stop()
        nats.stop()
        mongo.stop()
        shutil.rmtree(home, ignore_errors=True)


async def _linked(ph: Phase) -> bool:
    return all(ph.double.by_external_id(t) for t in ph.task_ids)


async def _settled(ph: Phase, js) -> bool:
    """Every change handled (nothing pending for board-sync) and every item shows its task's final status."""
    info = await js.consumer_info(EVENTS_STREAM, "board-sync-tasks")
    if info.num_pending or info.num_ack_pending:
        return False
    docs = {d["_id"]: d["status"] async for d in Task.get_pymongo_collection().find({"_id": {"$in": ph.task_ids}})}
    for t in ph.task_ids:
        items = ph.double.by_external_id(t)
        if not items or ph.double.group_of(items[0]) != GROUP[docs[t]]:
            return False
    return True

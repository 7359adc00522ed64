"""`uv run python -m bench.history.storage [--runs 20000] [--handler sqlite|postgresql]`: the storage
alone, through pymongo, no services: two databases on one FerretDB, one with two pages of history
and one with `--runs` runs (and as many tasks and sessions, 7 events each, `--audit` audit entries),
measured alternately: a run by id, a session by run id, a list page's bucket read, a run status
update. Shows what the handler and its indexes do, apart from the services' own costs."""

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from pymongo import AsyncMongoClient

import bench.history.__main__ as history
from bench.dispatch.probe import summary_ms
from nexus.dev.servers import ferretdb_handler, start_ferretdb

RUN = {
    "_id": "run_seed",
    "task_id": "tsk_seed",
    "agent_id": "agt_seed",
    "agent_revision": 1,
    "session_id": "ses_seed",
    "status": "succeeded",
    "attempt": 1,
    "attempts": [{"attempt": 1, "status": "succeeded"}],
    "max_attempts": 3,
    "config": {"prompt": "p" * 600, "tools": [{"name": f"tool{j}", "description": "d" * 30} for j in range(8)]},
    "usage": {"input_tokens": 10, "output_tokens": 20},
    "reason": "",
    "summary": "done",
    "version": 5,
}
INDEXES = {
    "runs": ["status", "task_id", "agent_id", "page"],
    "tasks": ["status", "goal_id", "page"],
    "sessions": ["run_id", "page"],
    "run_events": ["run_id"],
    "audit_entries": ["page"],
}


async def setup(mongo: AsyncMongoClient, name: str, runs: int, audit: int) -> list[str]:
    db = mongo[name]
    for coll, fields in INDEXES.items():
        for f in fields:
            await db[coll].create_index(f)
    await db.runs.insert_one(RUN)
    await db.tasks.insert_one({"_id": "tsk_seed", "title": "seed", "status": "done", "current_run_id": "run_seed"})
    await db.sessions.insert_one({"_id": "ses_seed", "run_id": "run_seed", "changes": [{"seq": 1, "kind": "note"}]})
    await db.run_events.insert_many(
        [{"_id": f"evt_{i}", "run_id": "run_seed", "type": "log", "data": {"i": i}} for i in range(7)]
    )
    await db.audit_entries.insert_one(
        {"_id": "aud_seed", "actor": "system", "action": "task.create", "resource": "tasks/tsk_seed"}
    )
    history.DB = name
    return (await history.fill(mongo, "run_seed", runs, audit, 7))["filled_ids"]


async def main_async(args: argparse.Namespace) -> dict:
    home = Path(tempfile.mkdtemp(prefix="nexus-bench-storage-"))
    server = start_ferretdb(home / "ferretdb", handler=args.handler, log_path=home / "ferretdb.log")
    try:
        mongo: AsyncMongoClient = AsyncMongoClient(server.url)
        ids = {"empty": await setup(mongo, "empty", 64, 64)}
        t = time.perf_counter()
        ids["filled"] = await setup(mongo, "filled", args.runs, args.audit)
        fill_s = round(time.perf_counter() - t, 1)
        newest = {k: (await mongo[k].page_counters.find_one({"_id": "runs"}))["n"] for k in ids}
        rnd = random.Random(1)
        ops = {
            "run_by_id": lambda k: mongo[k].runs.find_one({"_id": rnd.choice(ids[k])}),
            "sessions_of_run": lambda k: mongo[k].sessions.find({"run_id": rnd.choice(ids[k])}).to_list(None),
            "runs_list_bucket": lambda k: (
                mongo[k].runs.find({"page": newest[k] - 1}).sort("_id", -1).limit(21).to_list(None)
            ),
            "run_status_update": lambda k: mongo[k].runs.update_one(
                {"_id": rnd.choice(ids[k])}, {"$set": {"status": "failed"}}
            ),
        }
        figures = {}
        for name, op in ops.items():
            samples: dict[str, list[float]] = {"empty": [], "filled": []}
            for i in range(args.samples):
                for k in ("empty", "filled") if i % 2 else ("filled", "empty"):
                    t = time.perf_counter()
                    await op(k)
                    samples[k].append(time.perf_counter() - t)
            figures[name] = {k: summary_ms(v) for k, v in samples.items()}
        await mongo.close()
        return {
            "ferretdb_handler": args.handler or ferretdb_handler(),
            "runs": args.runs,
            "audit_entries": args.audit,
            "fill_s": fill_s,
            "figures": figures,
            "ratio_filled_over_empty": history.ratios(figures),
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.history.storage")
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--audit", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--handler", choices=["postgresql", "sqlite"])
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()

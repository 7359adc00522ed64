"""`uv run python -m bench.history.run_doc [--runs 2000] [--prompt-chars 0]`: what a run document costs
the embedded database (FerretDB on PostgreSQL) with its config inline (how runs were stored before
configs were kept apart) and without it (the config in `run_configs`), the same operations on both,
alternating: a run's status update by id (what every transition does), and a list page's bucket
(32 runs by `page`). Prints FerretDB's and PostgreSQL's CPU per operation and the wall time. Same-run
baseline: the same update of a document of two fields."""

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from pymongo import AsyncMongoClient

from bench.dispatch.probe import summary_ms
from bench.throughput.cpu import CpuMeter
from nexus.db.documents import Run
from nexus.dev.servers import start_ferretdb
from nexus.domain.agents import LLMSpec, Permissions
from nexus.events.payloads import RunConfig, TaskBrief

BUCKET = 32


def run_and_config(i: int, prompt_chars: int) -> tuple[dict, dict]:
    """A trivial agent's finished run as stored, and its config as assembled."""
    run_id = f"run_{i:08d}"
    at = datetime.now(UTC)
    config = RunConfig(
        run_id=run_id,
        agent_id="agt_bench",
        task_id=f"tsk_{i:08d}",
        session_id=f"ses_{i:08d}",
        system_prompt="You are benchmarked. " + "x" * prompt_chars,
        tools=["note"],
        permissions=msgspec.convert({"can_commit": False}, Permissions),
        llm=msgspec.convert({"provider": "scripted", "script": 'steps:\n  - say: "done"\n'}, LLMSpec),
        task=TaskBrief(title=f"bench {i}"),
        price=(0.0, 0.0),
    )
    run = Run.model_construct(  # no database bound: built, not validated against one
        id=run_id,
        task_id=config.task_id,
        agent_id=config.agent_id,
        agent_revision=1,
        session_id=config.session_id,
        status="succeeded",
        attempts=[{"n": 1, "runtime": "local", "started_at": at, "ended_at": at, "verdict": "succeeded", "seq": 6}],
        usage={"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "steps": 1},
        launch_msg_id=f"01BENCH{i:020d}",
        wall_clock_s=1800,
        summary="done",
        started_at=at,
        ended_at=at,
        page=i // BUCKET,
    )
    return {"_id": run.id, **run.model_dump(exclude={"id"})}, msgspec.to_builtins(config)


async def measure(args: argparse.Namespace, url: str, pids: dict[str, int]) -> dict:
    client: AsyncMongoClient = AsyncMongoClient(url, tz_aware=True)
    db = client["bench_run_doc"]
    shapes = {"config_inline": db["runs_inline"], "config_apart": db["runs_apart"], "baseline_two_fields": db["tiny"]}
    for coll in shapes.values():
        await coll.create_index("page")
    docs = [run_and_config(i, args.prompt_chars) for i in range(args.runs)]
    await shapes["config_inline"].insert_many([{**run, "config": config} for run, config in docs])
    await shapes["config_apart"].insert_many([run for run, _ in docs])
    await db["run_configs"].insert_many([{"_id": run["_id"], "config": config} for run, config in docs])
    await shapes["baseline_two_fields"].insert_many(
        [{"_id": run["_id"], "status": "x", "version": 0} for run, _ in docs]
    )
    ids = [run["_id"] for run, _ in docs]
    pages = max(1, args.runs // BUCKET)

    async def update(coll, i: int) -> None:
        await coll.update_one({"_id": ids[i % len(ids)]}, {"$set": {"status": "running"}, "$inc": {"version": 1}})

    async def page(coll, i: int) -> None:
        await coll.find({"page": i % pages}).to_list(None)

    out: dict = {}
    for op_name, op, n in (("status_update_by_id", update, args.samples), ("list_bucket_of_32", page, args.pages)):
        figures: dict = {}
        for name, coll in shapes.items():
            if op_name == "list_bucket_of_32" and name == "baseline_two_fields":
                continue
            meter = CpuMeter(pids)
            meter.start()
            times = []
            for i in range(n):
                t = time.perf_counter()
                await op(coll, i)
                times.append(time.perf_counter() - t)
            used = meter.stop()
            figures[name] = {
                **summary_ms(times),
                "ferretdb_cpu_ms_per_op": round(1000 * used["ferretdb"] / n, 3),
                "postgres_cpu_ms_per_op": round(1000 * used["postgres"] / n, 3),
            }
            print(op_name, name, json.dumps(figures[name]), file=sys.stderr, flush=True)
        out[op_name] = figures
    out["config_document_read_by_id"] = {}
    meter = CpuMeter(pids)
    meter.start()
    times = []
    for i in range(args.samples):
        t = time.perf_counter()
        await db["run_configs"].find_one({"_id": ids[i % len(ids)]})
        times.append(time.perf_counter() - t)
    used = meter.stop()
    out["config_document_read_by_id"] = {
        **summary_ms(times),
        "ferretdb_cpu_ms_per_op": round(1000 * used["ferretdb"] / args.samples, 3),
        "postgres_cpu_ms_per_op": round(1000 * used["postgres"] / args.samples, 3),
    }
    await client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.history.run_doc")
    parser.add_argument("--runs", type=int, default=2000, help="runs stored in each shape")
    parser.add_argument("--samples", type=int, default=2000, help="status updates (and config reads) per shape")
    parser.add_argument("--pages", type=int, default=200, help="list buckets read per shape")
    parser.add_argument("--prompt-chars", type=int, default=0, help="extra characters in the agent's prompt")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="nexus-bench-run-doc-"))
    server = start_ferretdb(home / "ferretdb", log_path=home / "ferretdb.log", handler="postgresql")
    try:
        pids = {"ferretdb": server.proc.pid, "postgres": server.backing[0].proc.pid}
        result = {
            "machine": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(), "note": "shared, contended box"},
            "sizes": {"runs": args.runs, "prompt_chars": args.prompt_chars},
            "figures": asyncio.run(measure(args, server.url, pids)),
        }
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""`uv run python -m bench.history [--runs 100000] [--audit 1000000]`: does Nexus slow down as history
piles up? Two stacks side by side on free ports, each with its own NATS, FerretDB, core-api and
worker. Each runs one real task with a scripted agent, then core-api is stopped and its database
filled in bulk with copies of those real documents (runs with their tasks, sessions and run events;
audit entries): the "empty" side with two pages of each (so both sides return full pages), the
"filled" side with the history sizes asked. With core-api started again, the same requests go to
both sides alternately, so both see the same load on a shared machine: GET by id, list pages, a
run's status update, and dispatch (task POST → run final in core-api's database). Prints both and
the ratios filled/empty. Same-run baseline: the raw pymongo insert rate on the empty side's server.

core-api runs with its read cache off (NEXUS_READ_CACHE_TTL_S=0): reads go to the database, which
is what is measured. `--handler sqlite` measures FerretDB's SQLite handler instead of the default."""

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pymongo import AsyncMongoClient

from bench.dispatch.probe import FINAL, summary_ms
from nexus.db.paging import BUCKET, reserve
from nexus.dev.postgres import vacuum_analyze
from nexus.dev.servers import free_port
from nexus.dev.stack import SERVICES, Stack
from nexus.domain.ids import new_id

DONE = 'steps:\n  - say: "done"\n'
DB = "nexus"


async def make_agent(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/v1/agents",
        json={
            "name": "quick",
            "system_prompt": "You are benchmarked.",
            "tools": ["note"],
            "permissions": {"can_commit": False},
            "llm": {"provider": "scripted", "script": DONE},
        },
    )
    r.raise_for_status()


async def dispatch_one(api: httpx.AsyncClient, title: str) -> tuple[str, float]:
    """task POST → the run final in core-api's database (polled through the API)."""
    t0 = time.perf_counter()
    r = await api.post("/v1/tasks", json={"title": title, "assignee": "quick"})
    r.raise_for_status()
    run_id = r.json()["current_run_id"]
    deadline = t0 + 300
    while time.perf_counter() < deadline:
        run = (await api.get(f"/v1/runs/{run_id}")).json()
        if run["status"] in FINAL:
            return run_id, time.perf_counter() - t0
        await asyncio.sleep(0.01)
    raise TimeoutError(f"run {run_id} not final after 300 s")


@dataclass
class Side:
    """One stack: its own NATS, FerretDB (and PostgreSQL), core-api and worker."""

    name: str
    stack: Stack
    key: str
    api: httpx.AsyncClient | None = None
    mongo: AsyncMongoClient | None = None
    run_ids: list[str] = field(default_factory=list)
    task_id: str = ""
    second_page: str = ""
    ui: httpx.AsyncClient | None = None  # signed in to the web UI
    rnd: random.Random = field(default_factory=lambda: random.Random(7))


async def paired(n: int, sides: list[Side], op) -> dict:
    """n samples of op on each side, alternating, so both sides see the same load on a shared box."""
    samples: dict[str, list[float]] = {s.name: [] for s in sides}
    for i in range(n):
        for side in sides if i % 2 == 0 else list(reversed(sides)):
            t = time.perf_counter()
            await op(side, i)
            samples[side.name].append(time.perf_counter() - t)
    return {name: summary_ms(xs) for name, xs in samples.items()}


async def _get(side: Side, path: str) -> None:
    (await side.api.get(path)).raise_for_status()  # type: ignore[union-attr]  # a side's client is set by prepare()


OPS = {
    "get_run_by_id": lambda s, i: _get(s, f"/v1/runs/{s.rnd.choice(s.run_ids)}"),
    "get_task_by_id": lambda s, i: _get(s, f"/v1/tasks/{s.task_id}"),
    "list_runs_first_page": lambda s, i: _get(s, "/v1/runs?limit=20"),
    "list_runs_second_page": lambda s, i: _get(s, s.second_page),
    "list_runs_status_succeeded": lambda s, i: _get(s, "/v1/runs?limit=20&status=succeeded"),
    "list_tasks_first_page": lambda s, i: _get(s, "/v1/tasks?limit=20"),
    "list_audit_first_page": lambda s, i: _get(s, "/v1/audit?limit=20"),
    # the write every run makes several times: one run document's status, by id
    "run_status_update": lambda s, i: s.mongo[DB]["runs"].update_one(  # type: ignore[index]  # a side's database client is set by prepare()
        {"_id": s.rnd.choice(s.run_ids)}, {"$set": {"status": "succeeded", "reason": f"bench {i}"}}
    ),
}


async def measure(sides: list[Side], args: argparse.Namespace) -> dict:
    for side in sides:
        first = (await side.api.get("/v1/runs?limit=20")).json()  # type: ignore[union-attr]  # a side's client is set by prepare()
        side.second_page = f"/v1/runs?limit=20&cursor={first['next_cursor']}"
        side.task_id = (await side.api.get(f"/v1/runs/{side.run_ids[0]}")).json()["task_id"]  # type: ignore[union-attr]  # a side's client is set by prepare()
    from bench.history.ui import sign_in, ui_ops

    for side in sides:
        side.ui = await sign_in(side.stack.api_url, side.key)
    ops = {**OPS, **ui_ops(lambda s: s.ui)}
    out = {name: await paired(args.samples, sides, op) for name, op in ops.items()}

    async def dispatch(side: Side, i: int) -> None:
        await dispatch_one(side.api, f"history bench {i}")  # type: ignore[arg-type]  # a side's client is set by prepare()

    out["dispatch_task_post_to_run_final"] = await paired(args.dispatch, sides, dispatch)
    return out


def _copy(doc: dict, **changes) -> dict:
    return {**doc, **changes}


async def fill(mongo: AsyncMongoClient, seed_run_id: str, n_runs: int, n_audit: int, events_per_run: int) -> dict:
    """Copies of real documents with new ids, inserted in bulk; each collection's paged documents get
    buckets reserved the way core-api takes them, so list pages see them as history."""
    db = mongo[DB]
    run = await db.runs.find_one({"_id": seed_run_id})
    run_config = await db.run_configs.find_one({"_id": seed_run_id})  # None: a tree that keeps it on the run
    task = await db.tasks.find_one({"_id": run["task_id"]})
    session = await db.sessions.find_one({"run_id": seed_run_id}) or {"_id": run["session_id"], "run_id": seed_run_id}
    events = await db.run_events.find({"run_id": seed_run_id}).to_list(None)  # stored one by one (older core-api)
    chunks = await db.run_event_chunks.find({"run_id": seed_run_id}).to_list(None)  # one per run per ingested batch
    audit = await db.audit_entries.find_one({}) or {"actor": "system", "action": "task.create", "resource": "tasks/x"}
    timings: dict = {}
    batch = 2000

    async def load(coll, total: int, make) -> None:
        t = time.perf_counter()
        paged = coll.name not in ("run_events", "run_event_chunks", "run_configs")
        first_page = await reserve(coll, -(-total // BUCKET)) if paged else 0
        for start in range(0, total, batch):
            docs = []
            for i in range(start, min(total, start + batch)):
                docs.extend(make(i, first_page + i // BUCKET))
            await coll.insert_many(docs, ordered=False)
        timings[coll.name] = {"documents": total, "s": round(time.perf_counter() - t, 1)}

    ids = [(new_id("run"), new_id("tsk"), new_id("ses")) for _ in range(n_runs)]
    statuses = ["succeeded"] * 8 + ["failed", "cancelled"]
    cost = round(float((run.get("usage") or {}).get("cost_usd", 0.0)), 6)

    def mk_run(i: int, page: int) -> list:
        r, t, s = ids[i]
        return [_copy(run, _id=r, task_id=t, session_id=s, page=page, status=statuses[i % 10])]

    def mk_config(i: int, _: int) -> list:
        return [_copy(run_config, _id=ids[i][0])]

    def mk_task(i: int, page: int) -> list:
        r, t, _ = ids[i]
        # its run ended: the task keeps the run's facts for the board, as core-api writes them with the move
        brief = {"id": r, "status": statuses[i % 10], "attempt": run.get("attempt", 1), "cost_usd": cost}
        return [_copy(task, _id=t, current_run_id=r, page=page, status="done", run_brief=brief)]

    def mk_session(i: int, page: int) -> list:
        r, _, s = ids[i]
        return [_copy(session, _id=s, run_id=r, page=page)]

    def mk_events(i: int, _: int) -> list:
        r = ids[i][0]
        return [_copy(e, _id=new_id("evt"), run_id=r) for e in events[:events_per_run]]

    def mk_chunks(i: int, _: int) -> list:
        r = ids[i][0]
        return [_copy(c, _id=f"{r}:{c['first_seq']}", run_id=r) for c in chunks]

    def mk_audit(i: int, page: int) -> list:
        return [_copy(audit, _id=new_id("aud"), resource=f"tasks/{ids[i % n_runs][1]}", page=page)]

    await load(db.runs, n_runs, mk_run)
    if run_config:
        await load(db.run_configs, n_runs, mk_config)
    await load(db.tasks, n_runs, mk_task)
    await load(db.sessions, n_runs, mk_session)
    if events:
        await load(db.run_events, n_runs, mk_events)
        timings["run_events"]["documents"] = n_runs * min(events_per_run, len(events))
    if chunks:
        await load(db.run_event_chunks, n_runs, mk_chunks)
        timings["run_event_chunks"]["documents"] = n_runs * len(chunks)
    await load(db.audit_entries, n_audit, mk_audit)
    timings["filled_ids"] = [r for r, _, _ in ids]
    return timings


async def insert_rate(mongo: AsyncMongoClient, n: int = 20_000) -> dict:
    """The server's raw bulk insert rate (pymongo insert_many of small documents) and one-by-one rate."""
    coll = mongo["bench_baseline"]["inserts"]
    await coll.drop()
    t = time.perf_counter()
    for start in range(0, n, 2000):
        await coll.insert_many([{"_id": f"b{i}", "n": i, "s": "x" * 200} for i in range(start, start + 2000)])
    bulk = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(500):
        await coll.insert_one({"_id": f"o{i}", "n": i, "s": "x" * 200})
    one = 500 / (time.perf_counter() - t)
    await coll.drop()
    return {"insert_many_docs_per_s": round(bulk), "insert_one_per_s": round(one)}


def ratios(figures: dict) -> dict:
    out = {}
    for k, v in figures.items():
        e, f = v["empty"], v["filled"]
        out[k] = {
            "p50": round(f["p50_ms"] / e["p50_ms"], 2) if e["p50_ms"] else None,
            "p99": round(f["p99_ms"] / e["p99_ms"], 2) if e["p99_ms"] else None,
        }
    return out


async def prepare(name: str, home: Path, runs: int, audit: int, args: argparse.Namespace) -> tuple[Side, dict]:
    key = "nxk_bench_" + uuid.uuid4().hex
    stack = Stack(
        home=home,
        http_port=free_port(),
        metrics_ports={n: free_port() for n in SERVICES},
        log_dir=home,
        env={
            "NEXUS_ADMIN_KEY": key,
            "NEXUS_LOG_LEVEL": "warning",
            "NEXUS_READ_CACHE_TTL_S": "0",
            "NEXUS_MONGODB_DB": DB,
        },
    )
    home.mkdir(parents=True, exist_ok=True)
    stack.admin_key_file.write_text(key)
    side = Side(name, stack, key)
    try:
        return await _prepare(side, runs, audit, args)
    except BaseException:
        if side.mongo:
            await side.mongo.close()
        stack.stop()
        raise


async def _prepare(side: Side, runs: int, audit: int, args: argparse.Namespace) -> tuple[Side, dict]:
    stack, key = side.stack, side.key
    stack.start(["core-api", "worker"])
    side.mongo = AsyncMongoClient(stack.mongodb_url)
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as api:
        await make_agent(api)
        seed, _ = await dispatch_one(api, "seed")
    stack.stop_service("core-api")
    t = time.perf_counter()
    filled = await fill(side.mongo, seed, runs, audit, args.events_per_run)
    side.run_ids = filled.pop("filled_ids")
    # A history grown over weeks has been vacuumed and analyzed by PostgreSQL as it grew; one loaded
    # in minutes has not, and autovacuum would be catching up while we measure. Both sides alike.
    for server in stack.servers:
        for backing in server.backing:
            if backing.name == "postgres":
                t_vac = time.perf_counter()
                await asyncio.to_thread(vacuum_analyze, backing)
                filled["vacuum_analyze_s"] = round(time.perf_counter() - t_vac, 1)
    filled["total_s"] = round(time.perf_counter() - t, 1)
    stack.start(["core-api"])
    side.api = httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    return side, filled


async def main_async(args: argparse.Namespace) -> dict:
    if args.handler:
        os.environ["NEXUS_FERRETDB_HANDLER"] = args.handler
    from nexus.dev.servers import ferretdb_handler

    home = Path(tempfile.mkdtemp(prefix="nexus-bench-history-"))
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "note": "shared, contended box"},
        "ferretdb_handler": ferretdb_handler(),
        "sizes": {
            "empty": {
                "runs": args.empty_runs,
                "tasks": args.empty_runs,
                "sessions": args.empty_runs,
                "run_events_per_run": args.events_per_run,
                "audit_entries": args.empty_runs,
            },
            "filled": {
                "runs": args.runs,
                "tasks": args.runs,
                "sessions": args.runs,
                "run_events_per_run": args.events_per_run,
                "audit_entries": args.audit,
            },
        },
    }
    sides: list[Side] = []
    try:
        empty, result["fill_empty"] = await prepare("empty", home / "empty", args.empty_runs, args.empty_runs, args)
        sides.append(empty)
        result["baseline"] = await insert_rate(empty.mongo)  # type: ignore[arg-type]  # a side's database client is set by prepare()
        filled, result["fill_filled"] = await prepare("filled", home / "filled", args.runs, args.audit, args)
        sides.append(filled)
        result["figures"] = await measure(sides, args)
        result["ratio_filled_over_empty"] = ratios(result["figures"])
    finally:
        for side in sides:
            if side.api:
                await side.api.aclose()
            if side.ui:
                await side.ui.aclose()
            if side.mongo:
                await side.mongo.close()
            side.stack.stop()
        if args.keep:
            result["home"] = str(home)
        else:
            shutil.rmtree(home, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.history")
    parser.add_argument("--runs", type=int, default=100_000, help="runs (and as many tasks and sessions) to fill")
    parser.add_argument("--audit", type=int, default=1_000_000, help="audit entries to fill")
    parser.add_argument(
        "--empty-runs",
        type=int,
        default=64,
        help="runs, tasks, sessions and audit entries on the 'empty' side: two pages, so both sides return full pages",
    )
    parser.add_argument("--events-per-run", type=int, default=7, help="run events copied per run")
    parser.add_argument("--samples", type=int, default=200, help="requests per read/update figure")
    parser.add_argument("--dispatch", type=int, default=10, help="sequential runs for the dispatch figure")
    parser.add_argument(
        "--handler", choices=["postgresql", "sqlite"], help="FerretDB handler (default: the embedded default)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()

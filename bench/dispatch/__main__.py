"""`uv run python -m bench.dispatch [--runs 50] [--concurrent 100]`: starts NATS, FerretDB, core-api
and the worker on free ports, then measures (1) dispatch latency, task ready → the runner's first
event, over sequential runs, and (2) a burst of concurrent runs: all complete? any lost? throughput,
peak memory. Baselines in the same run: bare `python -c pass` and `python -c "import nexus.events.bus"`."""

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.dispatch.probe import FINAL, PYTHON, MemorySampler, RunLog, spawn_latency, summary_ms, ts
from nexus.dev.servers import free_port
from nexus.dev.stack import SERVICES, Stack
from nexus.events.bus import connect

QUICK = 'steps:\n  - tool_calls:\n      - name: note\n        args: {message: "hi"}\n  - say: "done"\n'
HOLD = 'steps:\n  - tool_calls:\n      - name: run_command\n        args: {{cmd: "sleep {s}"}}\n  - say: "done"\n'


async def make_agent(api: httpx.AsyncClient, name: str, script: str) -> None:
    r = await api.post(
        "/v1/agents",
        json={
            "name": name,
            "system_prompt": "You are benchmarked.",
            "tools": ["note", "run_command"],
            "permissions": {"can_commit": False, "commands": {"allow": ["sleep *"], "default": "deny"}},
            "llm": {"provider": "scripted", "script": script},
        },
    )
    r.raise_for_status()


async def create_task(api: httpx.AsyncClient, agent: str, title: str) -> tuple[str, float]:
    r = await api.post("/v1/tasks", json={"title": title, "assignee": agent})
    r.raise_for_status()
    task = r.json()
    return task["current_run_id"], ts(task["created_at"])


async def until(predicate, *, tries: int, every_s: float = 0.05) -> bool:
    for _ in range(tries):
        if predicate():
            return True
        await asyncio.sleep(every_s)
    return False


async def latency(api: httpx.AsyncClient, log: RunLog, n: int) -> dict:
    await make_agent(api, "quick", QUICK)
    ready_to_first, ready_to_launched, launched_to_first, failures = [], [], [], 0
    for i in range(n):
        run_id, ready = await create_task(api, "quick", f"latency {i}")
        if not await until(lambda run_id=run_id: run_id in log.final, tries=1200):
            failures += 1
            continue
        ready_to_first.append(log.first_runner[run_id] - ready)
        ready_to_launched.append(log.launched[run_id] - ready)
        launched_to_first.append(log.first_runner[run_id] - log.launched[run_id])
    return {
        "task_ready_to_runner_first_event": summary_ms(ready_to_first),
        "task_ready_to_worker_launched": summary_ms(ready_to_launched),
        "worker_launched_to_runner_first_event": summary_ms(launched_to_first),
        "unfinished": failures,
    }


async def burst(api: httpx.AsyncClient, log: RunLog, stack: Stack, n: int, hold_s: int) -> dict:
    await make_agent(api, "burst", HOLD.format(s=hold_s))
    sampler = MemorySampler({name: p.pid for name, p in stack.procs.items()})
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> tuple[str, float]:
        async with sem:
            return await create_task(api, "burst", f"burst {i}")

    t0 = time.time()
    created = await asyncio.gather(*(one(i) for i in range(n)))
    ids = [run_id for run_id, _ in created]
    completed = await until(lambda: all(r in log.final for r in ids), tries=12000, every_s=0.1)
    wall = time.time() - t0
    stop.set()
    await sampling
    # core-api's view: it ingests every run event, so it settles after the runners are done.
    runs: list[dict] = []
    for _ in range(600):
        runs = [(await api.get(f"/v1/runs/{r}")).json() for r in ids]
        if all(r["status"] in FINAL for r in runs):
            break
        await asyncio.sleep(1)
    settled = time.time() - t0
    statuses: dict[str, int] = {}
    for r in runs:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    ends = [log.final.get(r) for r in ids]
    return {
        "runs": n,
        "hold_s": hold_s,
        "all_completed": completed,
        "runner_final_statuses": {s: ends.count(s) for s in set(ends)},
        "core_api_statuses": statuses,
        "lost": len([r for r in ids if r in log.lost]),
        "launched_twice": len([r for r in ids if log.launches.get(r, 0) > 1]),
        "retried_attempts": sum(max(0, len(r["attempts"]) - 1) for r in runs),
        "wall_s": round(wall, 2),
        "throughput_runs_per_s": round(n / wall, 2),
        "core_api_settled_s": round(settled, 2),
        "task_ready_to_runner_first_event": summary_ms(
            [log.first_runner[r] - ready for r, ready in created if r in log.first_runner]
        ),
        "task_ready_to_worker_launched": summary_ms(
            [log.launched[r] - ready for r, ready in created if r in log.launched]
        ),
        # split of the above: core-api storing the run and commanding its launch, then the worker
        "task_ready_to_run_commanded": summary_ms(
            [ts(run["created_at"]) - ready for run, (_, ready) in zip(runs, created, strict=True)]
        ),
        "run_commanded_to_worker_launched": summary_ms(
            [log.launched[run["id"]] - ts(run["created_at"]) for run in runs if run["id"] in log.launched]
        ),
        "worker_launched_to_runner_first_event": summary_ms(
            [log.first_runner[r] - log.launched[r] for r in ids if r in log.launched and r in log.first_runner]
        ),
        **sampler.report(),
    }


async def main_async(args: argparse.Namespace) -> dict:
    home = Path(tempfile.mkdtemp(prefix="nexus-bench-dispatch-"))
    key = "nxk_bench_" + uuid.uuid4().hex
    stack = Stack(
        home=home,
        http_port=free_port(),
        metrics_ports={n: free_port() for n in SERVICES},
        log_dir=home,
        env={
            "NEXUS_ADMIN_KEY": key,
            "NEXUS_MAX_RUNS_PER_AGENT": str(args.concurrent),
            "NEXUS_MAX_CONCURRENT_RUNS": str(args.concurrent),
            "NEXUS_LOG_LEVEL": "warning",
        },
    )
    home.mkdir(parents=True, exist_ok=True)
    stack.admin_key_file.write_text(key)
    result: dict = {"machine": {"cpus": __import__("os").cpu_count(), "python": sys.version.split()[0]}}
    try:
        result["baseline"] = {
            "spawn_python_pass": await spawn_latency([PYTHON, "-c", "pass"], 20),
            "spawn_python_import_nexus_events_bus": await spawn_latency([PYTHON, "-c", "import nexus.events.bus"], 10),
        }
        stack.start(["core-api", "worker"])
        nc = await connect(stack.nats_url or "", "bench-dispatch", creds=stack.creds("tools"))
        log = RunLog()
        sub = await log.follow(nc.jetstream())
        async with httpx.AsyncClient(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as api:
            result["latency"] = await latency(api, log, args.runs)
            result["burst"] = await burst(api, log, stack, args.concurrent, args.hold)
        await sub.unsubscribe()  # type: ignore[attr-defined]  # follow() returns the subscription as object
        await nc.drain()
        lat = result["latency"]["task_ready_to_runner_first_event"]
        result["targets"] = {
            "p50_le_300ms": lat["p50_ms"] <= 300,
            "p99_le_1s": lat["p99_ms"] <= 1000,
            "burst_all_complete_none_lost": result["burst"]["all_completed"]
            and result["burst"]["lost"] == 0
            and result["burst"]["launched_twice"] == 0,
        }
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            result["home"] = str(home)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch")
    parser.add_argument("--runs", type=int, default=50, help="sequential runs for the latency figures")
    parser.add_argument("--concurrent", type=int, default=100, help="runs launched at once")
    parser.add_argument("--hold", type=int, default=5, help="seconds each burst run sleeps, so they overlap")
    parser.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()

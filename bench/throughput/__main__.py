"""`uv run python -m bench.throughput [--runs 200] [--inflight 50] [--sequential 20] [--burst 50]`:
end-to-end run throughput through a real `tools/dev` stack (NATS, FerretDB, core-api, worker as
processes), once with every runner started cold and once forked from the worker's warm zygote.

Shapes, each a trivial agent (one scripted "done", no repository), task POST → run final in the
database (core-api's `run.<status>` fact, announced after it stored the status):
  - `one_at_a_time`: one run in flight (request → final latency);
  - `inflight`: `--runs` runs with `--inflight` in flight (the LangGraph-like shape);
  - `inflight_sse`, `inflight_wait`, `inflight_poll`: the same, each client learning its run's end over
    HTTP only, as an outside client does: following the run's event stream until it ends (then reading
    the run), asking for the run with `?wait_s=` (answered once its end is stored), or reading the run
    every 50 ms until it is final; `inflight_post_wait`: one request a run, the task created with
    `?wait_s=` (the LangGraph-like `runs/wait`);
  - `burst`: the dispatch bench's shape, `--burst` tasks created at once, each run holding `--hold` s;
  - `idle`: the stack at rest for `--idle-s` seconds: CPU-ms per second per process (what every
    run at a low rate carries as its share);
  - `steady`: open loop, tasks created at a fixed arrival rate for `--steady-s` seconds, once per rate
    in `--rates` (runs/s): the dispatch latency at a rate the box sustains, and whether it keeps up
    (`kept_up`: every run ended and the last arrivals waited no longer than the first — no growing queue).
Per shape: runs/s, request → final and dispatch (task created → runner's first event) p50/p99, lost,
launched twice, forked vs cold starts, where the CPU went (per service, runners = the rest), and what
each run asked of nats-server (`per_run.nats_server`: messages, connections, subscriptions, API requests)
and of PostgreSQL behind FerretDB (`per_run.postgres`: commits, rows, WAL; each statement's cost too when
run with NEXUS_PG_STATEMENTS=1, which starts the cluster with pg_stat_statements).
Same-run baselines: raw `os.fork` + exec of /bin/true, a bare fork, and raw pymongo inserts into
the same FerretDB."""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import msgspec

from bench.dispatch.__main__ import make_agent
from bench.dispatch.probe import FINAL, RunLog, summary_ms, ts
from bench.throughput.baselines import fork_exec_rate, pymongo_insert_rate
from bench.throughput import pg
from bench.throughput.cpu import CpuMeter
from nexus.dev.servers import free_port
from nexus.dev.stack import SERVICES, Stack
from nexus.events.bus import connect
from nexus.events.envelope import decode_raw

TRIVIAL = 'steps:\n  - say: "done"\n'
HOLD = 'steps:\n  - tool_calls:\n      - name: run_command\n        args: {{cmd: "sleep {s}"}}\n  - say: "done"\n'


class Finals:
    """core-api's `nexus.evt.run.<final>` facts, by run id: the run's end as stored in the database."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, float]] = {}
        self.waiting: dict[str, asyncio.Future] = {}

    async def on(self, msg) -> None:
        status = msg.subject.rsplit(".", 1)[1]
        if status not in FINAL:
            return
        run_id = msgspec.json.decode(decode_raw(msg.data).data)["run_id"]
        self.seen.setdefault(run_id, (status, time.time()))
        if (fut := self.waiting.pop(run_id, None)) is not None and not fut.done():
            fut.set_result(self.seen[run_id])

    async def wait(self, run_id: str, timeout_s: float) -> tuple[str, float] | None:
        if run_id in self.seen:
            return self.seen[run_id]
        fut = self.waiting.setdefault(run_id, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return None


Wait = Callable[[str, float], Awaitable[tuple[str, float] | None]]


class HttpWait:
    """A run's end as an outside client learns it: over the API, not the bus."""

    def __init__(self, api: httpx.AsyncClient) -> None:
        self.api = api

    async def _final(self, run_id: str) -> str | None:
        r = await self.api.get(f"/v1/runs/{run_id}", params={"config": "false"})
        status = r.json().get("status") if r.status_code == 200 else None
        return status if status in FINAL else None

    async def sse(self, run_id: str, timeout_s: float) -> tuple[str, float] | None:
        """Follow the run's event stream until the server ends it, then read the run."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self.api.stream("GET", f"/v1/runs/{run_id}/events") as r:
                    async for _ in r.aiter_raw():
                        pass
                ended = time.time()
                status = await self._final(run_id)
        except TimeoutError:
            return None
        return (status, ended) if status else None

    async def wait(self, run_id: str, timeout_s: float) -> tuple[str, float] | None:
        """Ask for the run once, the server answering when its end is stored (`?wait_s=`)."""
        give_up = time.monotonic() + timeout_s
        while (left := give_up - time.monotonic()) > 0:
            r = await self.api.get(f"/v1/runs/{run_id}", params={"config": "false", "wait_s": round(min(left, 30), 3)})
            if r.status_code == 200 and (status := r.json().get("status")) in FINAL:
                return status, time.time()
        return None

    async def poll(self, run_id: str, timeout_s: float) -> tuple[str, float] | None:
        give_up = time.monotonic() + timeout_s
        while time.monotonic() < give_up:
            if status := await self._final(run_id):
                return status, time.time()
            await asyncio.sleep(0.05)
        return None


async def create_task(api: httpx.AsyncClient, agent: str, title: str, errors: list[str]) -> dict | None:
    """The task core-api created, or None (its error is kept: a refused task is reported, not fatal)."""
    r = await api.post("/v1/tasks", json={"title": title, "assignee": agent})
    if r.status_code != 201:
        errors.append(f"{r.status_code}: {r.text[:300]}")
        return None
    return r.json()


def outcome(task: dict, t0: float, end: tuple[str, float] | None) -> dict:
    """One closed-loop run as the shapes report it: when it was asked for, created, and how it ended."""
    return {
        "run_id": task["current_run_id"],
        "t0": t0,
        "created": ts(task["created_at"]),
        "status": end[0] if end else None,
        "end": end[1] if end else None,
    }


async def closed_loop(
    api: httpx.AsyncClient,
    finals: Finals | Wait,
    agent: str,
    n: int,
    inflight: int,
    timeout_s: float,
    errors: list[str],
) -> list[dict]:
    """`inflight` clients, each creating a task and waiting for its run's end before the next."""
    todo = iter(range(n))
    out: list[dict] = []
    wait = finals.wait if isinstance(finals, Finals) else finals

    async def lane() -> None:
        for i in todo:
            t0 = time.time()
            task = await create_task(api, agent, f"{agent} {i}", errors)
            if task is None:
                continue
            out.append(outcome(task, t0, await wait(task["current_run_id"], timeout_s)))

    await asyncio.gather(*(lane() for _ in range(inflight)))
    return out


TASK_ENDS = {"done": "succeeded", "failed": "failed", "cancelled": "cancelled"}


async def closed_loop_waiting(
    api: httpx.AsyncClient, agent: str, n: int, inflight: int, timeout_s: float, errors: list[str]
) -> list[dict]:
    """As `closed_loop`, one request a run: the task created with `?wait_s=`, answered once its run ended
    (read as the run's outcome from the task's status; a run not ended by then is waited for as `wait`)."""
    todo = iter(range(n))
    out: list[dict] = []

    async def lane() -> None:
        for i in todo:
            t0 = time.time()
            r = await api.post(
                "/v1/tasks", params={"wait_s": min(timeout_s, 60)}, json={"title": f"{agent} {i}", "assignee": agent}
            )
            if r.status_code != 201:
                errors.append(f"{r.status_code}: {r.text[:300]}")
                continue
            task = r.json()
            status = TASK_ENDS.get(task["status"])
            end = (status, time.time()) if status else await HttpWait(api).wait(task["current_run_id"], timeout_s)
            out.append(outcome(task, t0, end))

    await asyncio.gather(*(lane() for _ in range(inflight)))
    return out


async def open_burst(
    api: httpx.AsyncClient, finals: Finals, agent: str, n: int, timeout_s: float, errors: list[str]
) -> list[dict]:
    """The dispatch bench's burst: all tasks created at once (16 requests at a time), then wait for all."""
    sem = asyncio.Semaphore(16)

    async def create(i: int) -> dict | None:
        async with sem:
            t0 = time.time()
            task = await create_task(api, agent, f"{agent} {i}", errors)
            return task and {"run_id": task["current_run_id"], "t0": t0, "created": ts(task["created_at"])}

    runs = [r for r in await asyncio.gather(*(create(i) for i in range(n))) if r is not None]
    for run in runs:
        end = await finals.wait(run["run_id"], timeout_s)
        run.update(status=end[0] if end else None, end=end[1] if end else None)
    return runs


async def open_steady(
    api: httpx.AsyncClient, finals: Finals, agent: str, rate: float, seconds: float, timeout_s: float, errors: list[str]
) -> list[dict]:
    """Open loop: one task created every 1/`rate` s for `seconds` s, each request on its own (a slow answer
    does not delay the next arrival), then wait for every run's end."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = max(1, round(rate * seconds))

    async def arrive(i: int) -> dict | None:
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        t0 = time.time()
        task = await create_task(api, agent, f"{agent} steady {i}", errors)
        if task is None:
            return None
        return outcome(task, t0, await finals.wait(task["current_run_id"], timeout_s))

    return [r for r in await asyncio.gather(*(arrive(i) for i in range(n))) if r is not None]


def steady_report(runs: list[dict], rate: float) -> dict:
    """What an open-loop shape adds: the offered and achieved rates, and whether the box kept up — every
    run ended, at least 90 % of the offered rate was achieved (the drain after the last arrival included),
    and the last quarter of arrivals waited no longer than the first (request → final p50 at most 1.5×
    and 100 ms above it): a queue that grows means the rate is beyond what the box sustains."""
    ended = sorted((r for r in runs if r["end"] is not None), key=lambda r: r["t0"])
    if not ended:
        return {"offered_runs_per_s": rate, "achieved_runs_per_s": 0.0, "kept_up": False}
    first = min(r["t0"] for r in runs)
    achieved = len(ended) / max(max(r["end"] for r in ended) - first, 1e-9)
    q = max(1, len(ended) // 4)
    head = statistics.median(r["end"] - r["t0"] for r in ended[:q])
    tail = statistics.median(r["end"] - r["t0"] for r in ended[-q:])
    return {
        "offered_runs_per_s": rate,
        "achieved_runs_per_s": round(achieved, 2),
        "request_to_final_p50_first_quarter_ms": round(head * 1000, 1),
        "request_to_final_p50_last_quarter_ms": round(tail * 1000, 1),
        "kept_up": len(ended) == len(runs) and achieved >= 0.9 * rate and tail <= 1.5 * head + 0.1,
    }


def shape_report(runs: list[dict], log: RunLog, cpu: dict, errors: list[str]) -> dict:
    ended = [r for r in runs if r["end"] is not None]
    wall = (max(r["end"] for r in ended) - min(r["t0"] for r in runs)) if ended else float("nan")
    statuses: dict[str, int] = {}
    for r in runs:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    ids = [r["run_id"] for r in runs]
    return {
        "runs": len(runs),
        "task_requests_refused": len(errors),
        "refusals": sorted(set(errors))[:3],
        "statuses_in_database": statuses,
        "runs_per_s": round(len(ended) / wall, 2) if ended else 0.0,
        "wall_s": round(wall, 2),
        "request_to_final": summary_ms([r["end"] - r["t0"] for r in ended]),
        "dispatch_task_created_to_runner_first_event": summary_ms(
            [log.first_runner[r["run_id"]] - r["created"] for r in runs if r["run_id"] in log.first_runner]
        ),
        "task_created_to_worker_launched": summary_ms(
            [log.launched[r["run_id"]] - r["created"] for r in runs if r["run_id"] in log.launched]
        ),
        "lost": len([i for i in ids if i in log.lost]),
        "launched_twice": len([i for i in ids if log.launches.get(i, 0) > 1]),
        "cpu_s": cpu,
    }


async def runner_starts(port: int) -> dict[str, int]:
    async with httpx.AsyncClient(timeout=60) as c:
        text = (await c.get(f"http://127.0.0.1:{port}/metrics")).text
    out = {"forked": 0, "cold": 0}
    for line in text.splitlines():
        if line.startswith("nexus_runner_starts_total{"):
            how = line.split('how="', 1)[1].split('"', 1)[0]
            out[how] = int(float(line.rsplit(" ", 1)[1]))
    return out


async def launch_checks(port: int) -> dict[str, float]:
    """How the worker judged its launches current so far: `bus` (no read of the run) or `read`."""
    async with httpx.AsyncClient(timeout=60) as c:
        text = (await c.get(f"http://127.0.0.1:{port}/metrics")).text
    return {
        line.split('how="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("nexus_launch_checks_total{")
    }


async def db_commands(ports: dict[str, int]) -> dict[str, dict[str, float]]:
    """Each service's database commands so far (nexus.db.stats), by "command collection", and what it published
    to JetStream (nexus_bus_published_total, nexus_bus_publish_waits_total) where it says."""
    out: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(timeout=60) as c:  # a busy box answers slowly
        for service in ("core-api", "worker"):
            counts: dict[str, float] = {}
            for line in (await c.get(f"http://127.0.0.1:{ports[service]}/metrics")).text.splitlines():
                if line.startswith("nexus_db_commands_total{"):
                    labels = dict(kv.split("=", 1) for kv in line[line.index("{") + 1 : line.index("}")].split(","))
                    key = f"{labels['command'].strip(chr(34))} {labels['collection'].strip(chr(34))}".strip()
                    counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
                elif line.startswith(("nexus_bus_published_total ", "nexus_bus_publish_waits_total ")):
                    counts[line.split(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])  # publishes, not commands
            out[service] = counts
    return out


async def bus_counters(monitor_url: str) -> dict[str, float]:
    """nats-server's own counters (its monitoring endpoint): messages in and out (all, and per kind of
    connection: every runner's connection counts as `agent-runner`), connections accepted, subscriptions
    made and withdrawn, JetStream API requests. Closed connections are counted while the server keeps
    them (its last 10,000): a shape of more runs than that undercounts the runners' messages."""
    if not monitor_url:
        return {}
    async with httpx.AsyncClient(base_url=monitor_url, timeout=60) as c:
        varz = (await c.get("/varz")).json()
        subsz = (await c.get("/subsz")).json()
        jsz = (await c.get("/jsz")).json()
        connz = (await c.get("/connz", params={"state": "all", "limit": 100_000})).json()
    by_kind: dict[str, float] = {}
    for conn in connz.get("connections", []):  # a runner's connection is named for its run: grouped as one kind
        kind = "agent-runner" if conn.get("name", "").startswith("agent-runner-") else conn.get("name", "?")
        for what in ("in_msgs", "out_msgs"):
            by_kind[f"{kind} {what}"] = by_kind.get(f"{kind} {what}", 0) + conn.get(what, 0)
    return {
        **by_kind,
        "messages_in": varz.get("in_msgs", 0),
        "messages_out": varz.get("out_msgs", 0),
        "connections": varz.get("total_connections", 0),
        "subscriptions_made": subsz.get("num_inserts", 0),
        "subscriptions_withdrawn": subsz.get("num_removes", 0),
        "jetstream_api_requests": jsz.get("api", {}).get("total", 0),
    }


def per_run(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], cpu: dict, runs: int) -> dict:
    """Database commands and CPU-ms per run: the figures contention changes least."""
    n = max(runs, 1)
    out: dict = {"db_commands": {}, "cpu_ms": {}}
    for service, counts in after.items():
        delta = {k: v - before.get(service, {}).get(k, 0.0) for k, v in counts.items()}
        delta = {k: round(v / n, 2) for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v > 0}
        published = {k.removeprefix("nexus_bus_"): delta.pop(k) for k in list(delta) if k.startswith("nexus_bus_")}
        out["db_commands"][service] = {"total": round(sum(delta.values()), 2), **delta}
        if published:  # to JetStream: messages, and the waits for their acks (a batch sent together is one)
            out.setdefault("publishes", {})[service] = published
    for name, v in cpu.items():
        if isinstance(v, (int, float)) and name not in ("machine_busy", "rest_runners_and_others"):
            out["cpu_ms"][name] = round(1000 * v / n, 1)
    for name, v in cpu.get("reaped_children", {}).items():
        out["cpu_ms"][f"{name}: reaped children (runners)"] = round(1000 * v / n, 1)
    return out


async def wait_for_zygote(port: int, tries: int = 600) -> bool:
    async with httpx.AsyncClient() as c:
        for _ in range(tries):
            try:
                if "nexus_runner_zygote_up 1.0" in (await c.get(f"http://127.0.0.1:{port}/metrics")).text:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    return False


async def one_mode(zygote: bool, args: argparse.Namespace) -> dict:
    home = Path(tempfile.mkdtemp(prefix="nexus-bench-throughput-"))
    key = "nxk_bench_" + uuid.uuid4().hex
    ports = {n: free_port() for n in SERVICES}
    stack = Stack(
        home=home,
        http_port=free_port(),
        metrics_ports=ports,
        log_dir=home,
        env={
            "NEXUS_ADMIN_KEY": key,
            "NEXUS_MAX_RUNS_PER_AGENT": "500",
            "NEXUS_MAX_CONCURRENT_RUNS": "500",
            "NEXUS_LOG_LEVEL": "warning",
            "NEXUS_ZYGOTE": "true" if zygote else "false",
        },
    )
    home.mkdir(parents=True, exist_ok=True)
    stack.admin_key_file.write_text(key)
    result: dict = {"zygote": zygote}
    try:
        stack.start(["core-api", "worker"])
        if zygote:
            result["zygote_ready"] = await wait_for_zygote(ports["worker"])
        nc = await connect(stack.nats_url or "", "bench-throughput", creds=stack.creds("tools"))
        log, finals = RunLog(), Finals()
        sub = await log.follow(nc.jetstream())
        await nc.subscribe("nexus.evt.run.*", cb=finals.on)
        meter = CpuMeter(
            {
                **{n: p.pid for n, p in stack.procs.items()},
                **{s.name: s.proc.pid for s in stack.servers},
                **{b.name: b.proc.pid for s in stack.servers for b in s.backing},
            }
        )
        async with httpx.AsyncClient(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        ) as api:
            await make_agent(api, "trivial", TRIVIAL)
            await make_agent(api, "holder", HOLD.format(s=args.hold))
            await closed_loop(
                api, finals, "trivial", 3, 1, args.timeout, []
            )  # warm-up: caches, connections, first imports
            # …and the worker past the margin after its start in which it reads every launch's run (a
            # long-running worker judges launches by the bus): warm-up runs until it does, or 60 of them.
            for _ in range(60):
                checks = await launch_checks(ports["worker"])
                if not checks or checks.get("bus"):  # a worker that never judges by the bus: nothing to wait for
                    break
                await asyncio.sleep(0.5)
                await closed_loop(api, finals, "trivial", 1, 1, args.timeout, [])
            before = await runner_starts(ports["worker"])
            shapes = {
                "one_at_a_time": lambda errors: closed_loop(
                    api, finals, "trivial", args.sequential, 1, args.timeout, errors
                ),
                "inflight": lambda errors: closed_loop(
                    api, finals, "trivial", args.runs, args.inflight, args.timeout, errors
                ),
                "inflight_sse": lambda errors: closed_loop(
                    api, HttpWait(api).sse, "trivial", args.runs, args.inflight, args.timeout, errors
                ),
                "inflight_wait": lambda errors: closed_loop(
                    api, HttpWait(api).wait, "trivial", args.runs, args.inflight, args.timeout, errors
                ),
                "inflight_post_wait": lambda errors: closed_loop_waiting(
                    api, "trivial", args.runs, args.inflight, args.timeout, errors
                ),
                "inflight_poll": lambda errors: closed_loop(
                    api, HttpWait(api).poll, "trivial", args.runs, args.inflight, args.timeout, errors
                ),
                "burst": lambda errors: open_burst(api, finals, "holder", args.burst, args.timeout, errors),
            }
            if "idle" in args.shapes.split(","):  # what the stack burns doing nothing, per second
                meter.start()
                await asyncio.sleep(args.idle_s)
                idle = meter.stop()
                result["idle"] = {
                    "seconds": args.idle_s,
                    "cpu_ms_per_s": {
                        k: round(1000 * v / args.idle_s, 1) for k, v in idle.items() if isinstance(v, (int, float))
                    },
                }
            if "steady" in args.shapes.split(","):
                for rate in (float(r) for r in args.rates.split(",") if r.strip()):
                    shapes[f"steady_{rate:g}"] = lambda errors, rate=rate: open_steady(  # type: ignore[misc]  # every shape takes the errors list
                        api, finals, "trivial", rate, args.steady_s, args.timeout, errors
                    )
            for name, shape in shapes.items():
                if name.split("_", 1)[0] != "steady" and name not in args.shapes.split(","):
                    continue
                db_before, checks_before = await db_commands(ports), await launch_checks(ports["worker"])
                bus_before = await bus_counters(stack.nats_monitor_url)
                pg_before = pg.snapshot(pg.postgres_of(stack.servers))
                meter.start()
                errors: list[str] = []
                runs = await shape(errors)
                cpu = meter.stop()
                result[name] = shape_report(runs, log, cpu, errors)
                result[name]["per_run"] = per_run(db_before, await db_commands(ports), cpu, len(runs))
                result[name]["per_run"]["postgres"] = pg.per_run(
                    pg_before, pg.snapshot(pg.postgres_of(stack.servers)), len(runs)
                )
                bus_after = await bus_counters(stack.nats_monitor_url)
                result[name]["per_run"]["nats_server"] = {
                    k: round((v - bus_before.get(k, 0)) / max(len(runs), 1), 2) for k, v in bus_after.items()
                }
                if name.startswith("steady_"):
                    result[name].update(steady_report(runs, float(name.removeprefix("steady_"))))
                checks = await launch_checks(ports["worker"])
                result[name]["launches_judged"] = {k: v - checks_before.get(k, 0.0) for k, v in checks.items()}
            after = await runner_starts(ports["worker"])
            result["runner_starts"] = {k: after[k] - before.get(k, 0) for k in after}
        await sub.unsubscribe()  # type: ignore[attr-defined]  # follow() returns the subscription as object
        await nc.drain()
    finally:
        stack.stop()
        refused = any(isinstance(v, dict) and v.get("task_requests_refused") for v in result.values())
        if args.keep or refused:  # keep the logs of a run that went wrong
            result["home"] = str(home)
        else:
            shutil.rmtree(home, ignore_errors=True)
    return result


async def main_async(args: argparse.Namespace) -> dict:
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "loadavg_at_start": os.getloadavg()}
    }
    result["baseline"] = {
        "fork_exec_bin_true": fork_exec_rate(args.baseline_n),
        "fork_only": fork_exec_rate(args.baseline_n, exec_=False),
        "pymongo": await pymongo_insert_rate(args.baseline_n),
    }
    modes = {"cold": False, "zygote": True}
    for name in args.modes.split(","):
        result[name] = await one_mode(modes[name], args)
    if "inflight" in result.get("zygote", {}):
        z = result["zygote"]["inflight"]
        result["targets"] = {
            "inflight_ge_100_runs_per_s": z["runs_per_s"] >= 100,
            "dispatch_p50_le_50ms": z["dispatch_task_created_to_runner_first_event"]["p50_ms"] <= 50,
            "dispatch_p99_le_250ms": z["dispatch_task_created_to_runner_first_event"]["p99_ms"] <= 250,
            "none_lost_none_twice": all(
                shape["lost"] == 0 and shape["launched_twice"] == 0
                for m in args.modes.split(",")
                for shape in result[m].values()
                if isinstance(shape, dict) and "lost" in shape
            ),
        }
        if "cold" in result and "inflight" in result["cold"] and result["cold"]["inflight"]["runs_per_s"]:
            result["speedup_inflight_zygote_over_cold"] = round(
                z["runs_per_s"] / result["cold"]["inflight"]["runs_per_s"], 2
            )
    steady = {k: v for k, v in result.get("zygote", {}).items() if k.startswith("steady_") and v.get("kept_up")}

    def dispatch_of(name: str) -> dict:
        shape = steady[name]
        d = shape["dispatch_task_created_to_runner_first_event"]
        return {
            "shape": name,
            "offered_runs_per_s": shape["offered_runs_per_s"],
            "dispatch_p50_ms": d["p50_ms"],
            "dispatch_p99_ms": d["p99_ms"],
            "dispatch_p50_le_50ms": d["p50_ms"] <= 50,
            "dispatch_p99_le_250ms": d["p99_ms"] <= 250,
        }

    if steady:  # the dispatch goal read at the arrival rates the box kept up with
        by_rate = sorted(steady, key=lambda name: steady[name]["offered_runs_per_s"])
        result["steady_highest_kept_up"] = dispatch_of(by_rate[-1])
        within = [
            n for n in by_rate if dispatch_of(n)["dispatch_p50_le_50ms"] and dispatch_of(n)["dispatch_p99_le_250ms"]
        ]
        if within:
            result["steady_highest_within_dispatch_goals"] = dispatch_of(within[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput")
    parser.add_argument("--runs", type=int, default=200, help="runs in the in-flight shape")
    parser.add_argument("--inflight", type=int, default=50, help="runs kept in flight")
    parser.add_argument("--sequential", type=int, default=20, help="runs one at a time")
    parser.add_argument("--burst", type=int, default=50, help="tasks created at once in the burst shape")
    parser.add_argument("--hold", type=int, default=2, help="seconds each burst run sleeps, so they overlap")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds a run may take before it counts as unfinished"
    )
    parser.add_argument("--shapes", default="one_at_a_time,inflight,burst", help="which shapes to run (and steady)")
    parser.add_argument("--rates", default="5,10,15,20", help="arrival rates (runs/s) of the steady shape")
    parser.add_argument("--idle-s", type=float, default=10.0, help="seconds the idle shape measures a stack at rest")
    parser.add_argument("--steady-s", type=float, default=10.0, help="seconds of arrivals per steady rate")
    parser.add_argument("--modes", default="cold,zygote", help="cold, zygote or both (before and after, same run)")
    parser.add_argument("--baseline-n", type=int, default=200, help="iterations of each baseline")
    parser.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()

"""`uv run python -m bench.soak [--minutes 10] [--concurrent 100]`: a bounded soak of the whole stack
(nats-server, FerretDB, core-api, worker on free ports). Keeps `--concurrent` runs of mixed durations
(0-5 s of work each) in flight for `--minutes`, then reports: runs created/final/by status, RSS and
open files per service (and of nats-server, FerretDB) before, after a minute under load (`warm`) and
after, with their growth from each, and each
durable consumer's lag (pending + unacknowledged) once the last run is final. Prints JSON."""

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
from pathlib import Path

import httpx

from nexus.dev.servers import free_port
from nexus.dev.stack import SERVICES, Stack
from nexus.events.bus import connect
from nexus.events.catalog import CMDS_STREAM, RUNS_STREAM

FINAL = ("succeeded", "failed", "cancelled", "timed_out")
DURATIONS = (0, 1, 2, 5)


def script(sleep_s: int) -> str:
    work = f'  - tool_calls:\n      - name: run_command\n        args: {{cmd: "sleep {sleep_s}"}}\n' if sleep_s else ""
    return f'steps:\n  - tool_calls:\n      - name: note\n        args: {{message: "soak"}}\n{work}  - say: "done"\n'


def _tree(pid: int) -> list[int]:
    """The process and its descendants (core-api's server runs its app in a child process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _session(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def sample(pid: int, *, skip: set[int] = frozenset()) -> dict:
    """RSS (KiB) and open files of a process and its descendants (not runners: they come and go), from /proc."""
    rss = fds = 0
    own = _session(pid)
    for p in _tree(pid):
        if p in skip:
            continue
        try:
            status = Path(f"/proc/{p}/status").read_text()
            # Runners (cold or forked from the worker's zygote) and their commands live in sessions of their own.
            if "agent_runner" in Path(f"/proc/{p}/cmdline").read_text(errors="replace") or _session(p) != own:
                continue
            rss += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            continue
    return {"rss_kib": rss or None, "open_files": fds or None}


def processes(stack: Stack) -> dict[str, int]:
    return {**{n: p.pid for n, p in stack.procs.items()}, **{s.name: s.proc.pid for s in stack.servers}}


def growth(before: dict, after: dict) -> dict:
    out = {}
    for name, b in before.items():
        a = after.get(name, {})
        out[name] = {
            k: (round(100.0 * (a[k] - b[k]) / b[k], 1) if b.get(k) and a.get(k) is not None else None)
            for k in ("rss_kib", "open_files")
        }
    return out


async def lag(nc) -> dict:
    js = nc.jetstream()
    out = {}
    for stream in (RUNS_STREAM, CMDS_STREAM):
        for c in await js.consumers_info(stream):
            out[c.name] = {"pending": c.num_pending, "ack_pending": c.num_ack_pending}
    return out


async def main_async(a: argparse.Namespace) -> dict:
    home = Path(tempfile.mkdtemp(prefix="nexus-soak-"))
    key = "nxk_soak_" + uuid.uuid4().hex
    stack = Stack(
        home=home,
        http_port=free_port(),
        metrics_ports={n: free_port() for n in SERVICES},
        log_dir=home,
        env={
            "NEXUS_ADMIN_KEY": key,
            "NEXUS_MAX_RUNS_PER_AGENT": str(a.concurrent),
            "NEXUS_MAX_CONCURRENT_RUNS": str(a.concurrent),
            "NEXUS_LOG_LEVEL": "warning",
        },
    )
    home.mkdir(parents=True, exist_ok=True)
    stack.admin_key_file.write_text(key)
    result: dict = {
        "minutes": a.minutes,
        "concurrent": a.concurrent,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "note": "2 shared cores with other engineers' work running",
    }
    rng = random.Random(7)
    try:
        stack.start(["core-api", "worker"])
        async with httpx.AsyncClient(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as api:
            for d in DURATIONS:
                r = await api.post(
                    "/v1/agents",
                    json={
                        "name": f"soak-{d}",
                        "system_prompt": "You are soaked.",
                        "tools": ["note", "run_command"],
                        "permissions": {"can_commit": False, "commands": {"allow": ["sleep *"], "default": "deny"}},
                        "llm": {"provider": "scripted", "script": script(d)},
                    },
                )
                r.raise_for_status()
            warm = await api.post("/v1/tasks", json={"title": "warm-up", "assignee": "soak-0"})
            warm.raise_for_status()
            await _final(api, warm.json()["current_run_id"])
            pids = processes(stack)
            result["before"] = {n: sample(p) for n, p in pids.items()}
            deadline = time.monotonic() + a.minutes * 60
            created: list[str] = []
            statuses: dict[str, str] = {}
            unexpected: list[dict] = []

            async def lane(i: int) -> None:
                while time.monotonic() < deadline:
                    r = await api.post(
                        "/v1/tasks", json={"title": f"soak {i}", "assignee": f"soak-{rng.choice(DURATIONS)}"}
                    )
                    r.raise_for_status()
                    run_id = r.json()["current_run_id"]
                    created.append(run_id)
                    statuses[run_id] = await _final(api, run_id)
                    if statuses[run_id] != "succeeded":  # what ended otherwise, and why, in the report
                        run = (await api.get(f"/v1/runs/{run_id}")).json()
                        unexpected.append(
                            {
                                "run_id": run_id,
                                "status": run.get("status"),
                                "reason": run.get("reason"),
                                "attempt": run.get("attempt"),
                                "agent": run.get("agent_id"),
                            }
                        )

            async def warm_sample() -> None:
                # Pools (MongoDB clients, FerretDB's backend connections) open under the first load: a
                # sample after that separates warm-up from growth that goes on (a leak).
                await asyncio.sleep(min(a.warmup_minutes, a.minutes / 2) * 60)
                result["warm"] = {n: sample(p) for n, p in processes(stack).items()}

            await asyncio.gather(warm_sample(), *(lane(i) for i in range(a.concurrent)))
            by_status: dict[str, int] = {}
            for s in statuses.values():
                by_status[s] = by_status.get(s, 0) + 1
            result["runs"] = {
                "created": len(created),
                "final": sum(s in FINAL for s in statuses.values()),
                "by_status": by_status,
                "per_minute": round(len(created) / a.minutes, 1),
                "not_succeeded": unexpected[:50],
            }
            nc = await connect(stack.nats_url or "", "soak", creds=stack.creds("tools"))
            for _ in range(100):  # let the last events drain; the lag reported is what remains
                result["consumer_lag"] = await lag(nc)
                if all(v["pending"] == 0 and v["ack_pending"] == 0 for v in result["consumer_lag"].values()):
                    break
                await asyncio.sleep(0.2)
            await nc.drain()
            result["after"] = {n: sample(p) for n, p in processes(stack).items()}
            result["growth_percent"] = growth(result["before"], result["after"])
            result["growth_after_warmup_percent"] = growth(result["warm"], result["after"])
            result["restarted_during_soak"] = sorted(n for n, p in processes(stack).items() if pids.get(n) != p)
    finally:
        stack.stop()
        if (result.get("runs") or {}).get("not_succeeded"):
            result["logs_kept_in"] = str(
                home
            )  # a run ended otherwise than succeeded: its services' logs stay for reading
        else:
            shutil.rmtree(home, ignore_errors=True)
    return result


async def _final(api: httpx.AsyncClient, run_id: str) -> str:
    for _ in range(6000):
        r = await api.get(f"/v1/runs/{run_id}")
        if r.status_code == 200 and r.json()["status"] in FINAL:
            return r.json()["status"]
        await asyncio.sleep(0.2)
    return "not final"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "10")))
    ap.add_argument("--concurrent", type=int, default=int(os.environ.get("SOAK_CONCURRENT", "100")))
    ap.add_argument(
        "--warmup-minutes",
        type=float,
        default=float(os.environ.get("SOAK_WARMUP_MINUTES", "1")),
        help="when the `warm` sample is taken, under load (at most half the soak)",
    )
    print(json.dumps(asyncio.run(main_async(ap.parse_args())), indent=2))


if __name__ == "__main__":
    main()

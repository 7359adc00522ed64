"""`uv run python -m bench.api [--seconds 10] [--rate 1000] [--install]`: starts NATS, FerretDB and
core-api (granian, as `make run` does) on free loopback ports, seeds a few goals, then drives it
with oha: reads and writes at fixed rates (p50/p99/max), and max throughput with no rate limit.
The baseline, in the same run, is `/healthz` on the same server: granian + litestar + the metrics
middleware, without auth or the database. Prints JSON; exits 0 with {"skipped": why} without oha."""

import argparse
import json
import os
import platform
import sys
import tempfile
import uuid
from pathlib import Path

import httpx

from bench.api.load import find_oha, oha
from nexus.dev.servers import free_port
from nexus.dev.stack import Stack

TARGET_P99_MS = 10.0


def seed(url: str, key: str, n: int = 50) -> list[str]:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as api:
        return [
            api.post("/v1/goals", json={"title": f"bench goal {i}"}).raise_for_status().json()["id"] for i in range(n)
        ]


def scenarios(url: str, key: str, goal: str, rate: int) -> list[dict]:
    auth = {"Authorization": f"Bearer {key}"}
    write = json.dumps({"title": "bench write", "description": "written at a fixed rate"})
    return [
        {"name": "baseline_healthz", "path": "/healthz", "rate": rate},
        {"name": "read_goal", "path": f"/v1/goals/{goal}", "rate": rate, "headers": auth},
        {"name": "read_goal_list_20", "path": "/v1/goals?limit=20", "rate": rate // 2, "headers": auth},
        {
            "name": "write_goal",
            "path": "/v1/goals",
            "rate": rate // 5,
            "headers": auth,
            "method": "POST",
            "body": write,
        },
        {"name": "max_baseline_healthz", "path": "/healthz", "rate": None},
        {"name": "max_read_goal", "path": f"/v1/goals/{goal}", "rate": None, "headers": auth},
        {"name": "max_write_goal", "path": "/v1/goals", "rate": None, "headers": auth, "method": "POST", "body": write},
    ]


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.api")
    ap.add_argument("--seconds", type=float, default=10.0, help="per scenario")
    ap.add_argument("--rate", type=int, default=1000, help="the fixed read rate (req/s); writes run at a fifth of it")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--install", action="store_true", help="cargo install oha when it is missing")
    args = ap.parse_args()

    binary, why = find_oha(args.install)
    if binary is None:
        print(json.dumps({"bench": "api", "skipped": why}, indent=2))
        return 0
    version = os.popen(f"{binary} --version").read().strip()

    home = Path(tempfile.mkdtemp(prefix="nexus-bench-api-"))
    key = "nxk_bench_" + uuid.uuid4().hex
    stack = Stack(
        home=home,
        http_port=free_port(),
        metrics_ports={"core-api": free_port()},
        log_dir=home,
        env={"NEXUS_ADMIN_KEY": key, "NEXUS_LOG_LEVEL": "warning", "NEXUS_MONGODB_DB": "bench"},
    )
    results = []
    try:
        stack.start(["core-api"])
        goals = seed(stack.api_url, key)
        for sc in scenarios(stack.api_url, key, goals[0], args.rate):
            fixed = sc["rate"] is not None
            seconds = args.seconds if fixed else max(3.0, args.seconds / 2)
            r = oha(
                binary,
                stack.api_url + sc["path"],
                seconds=seconds,
                rate=sc["rate"],
                connections=args.connections,
                method=sc.get("method", "GET"),
                body=sc.get("body"),
                headers=sc.get("headers"),
            )
            results.append(
                {
                    "name": sc["name"],
                    "method": sc.get("method", "GET"),
                    "path": sc["path"].replace(goals[0], "{goal_id}"),
                    "target_rps": sc["rate"] or "max",
                    "seconds": seconds,
                    **r,
                }
            )
    finally:
        stack.stop()

    by = {r["name"]: r for r in results}
    read = by["read_goal"]
    report = {
        "bench": "api",
        "tool": version,
        "server": "core-api on granian (1 worker) + FerretDB + NATS, loopback",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "scenarios": results,
        "target": {
            "reads_p99_ms_at_rps": args.rate,
            "limit_ms": TARGET_P99_MS,
            "read_goal_p99_ms": read["p99_ms"],
            "achieved_rps": read["rps"],
            "met": read["p99_ms"] <= TARGET_P99_MS and read["success_rate"] == 1.0,
        },
        "vs_baseline": {
            "read_p99_over_healthz_p99": round(read["p99_ms"] / max(by["baseline_healthz"]["p99_ms"], 1e-3), 2),
            "max_read_rps_over_healthz": round(
                by["max_read_goal"]["rps"] / max(by["max_baseline_healthz"]["rps"], 1e-3), 3
            ),
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

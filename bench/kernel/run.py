"""Run the kernel benchmarks and print one JSON document.

    uv run python -m bench.kernel            # full run (~10 minutes on 2 cores)
    uv run python -m bench.kernel --quick    # a smaller, faster pass
    uv run python -m bench.kernel --only b1,b5 --out results.json

Every bench runs the kernel and a raw-asyncio (or raw nats-py / raw pipe) baseline in the
same process run, alternating which goes first, and reports medians of paired trials.
`targets` says, for each goal of issue 6, the measured value and whether it was met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/kernel/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.kernel import (
    b1_throughput,
    b2_latency,
    b3_backpressure,
    b4_idle,
    b5_ask,
    b6_bridge,
    b6_nats,
    queue_baseline,
)

BENCHES = {
    "queue_baseline": queue_baseline.run,
    "b1": b1_throughput.run,
    "b2": b2_latency.run,
    "b3": b3_backpressure.run,
    "b4": b4_idle.run,
    "b5": b5_ask.run,
    "b6_bridge": b6_bridge.run,
    "b6_nats": b6_nats.run,
}


def _check(out: dict[str, Any], name: str, value: float, op: str, limit: float, note: str = "") -> None:
    met = value >= limit if op == ">=" else value <= limit
    out[name] = {"value": value, "target": f"{op} {limit}", "met": met}
    if note:
        out[name]["note"] = note


def _stalls(bench: dict[str, Any]) -> str:
    s = bench.get("idle_loop_stall_ms", {})
    return f"an idle event loop on this machine stalled up to {s.get('max')} ms (p99 {s.get('p99')} ms) in 3 s"


def targets(r: dict[str, Any]) -> dict[str, Any]:
    t: dict[str, Any] = {}
    if b1 := r.get("b1"):
        for n in (1_000, 10_000):
            _check(t, f"B1 interleaved {n} agents (ratio)", b1[f"interleaved_{n}"]["ratio"], ">=", 0.85)
            _check(t, f"B1 burst {n} agents (ratio)", b1[f"burst_{n}"]["ratio"], ">=", 0.75)
    if b2 := r.get("b2"):
        for load in ("load_50", "load_90"):
            _check(t, f"B2 {load} p99 (kernel/raw)", b2[load]["p99_ratio"], "<=", 1.3)
            raw_max = b2[load]["max_raw"]
            note = f"raw: {raw_max} ms; " + _stalls(b2)
            _check(t, f"B2 {load} max ms, 10k agents", b2[load]["max_kernel"], "<=", 5.0, note)
    if b3 := r.get("b3"):
        slow = b3["slow_agent"]["kernel"]
        _check(t, "B3 max mailbox depth (capacity 64)", slow["max_depth"], "<=", 64)
        raw_slow = b3["slow_agent"]["raw"]
        note = f"raw: {raw_slow['max_send_ms']} ms; kernel p99 {slow['p99_send_ms']} ms; " + _stalls(b3)
        _check(t, "B3 max send ms (timeout 50)", slow["max_send_ms"], "<=", 55.0, note)
        _check(t, "B3 healthy agents with one hung (ratio)", b3["hung_handler"]["kernel"]["ratio"], ">=", 0.9)
    if b4 := r.get("b4"):
        for n in (10_000, 100_000):
            row = b4[f"idle_{n}"]
            _check(t, f"B4 bytes per idle agent, {n}", row["bytes_per_agent_kernel"], "<=", 2560)
            _check(t, f"B4 spawn time {n} (kernel/raw)", row["spawn_time_ratio"], "<=", 1.5)
    if b5 := r.get("b5"):
        for mode in ("sequential", "concurrent_100"):
            _check(t, f"B5 {mode} round trips (ratio)", b5[mode]["ratio"], ">=", 0.7)
            _check(t, f"B5 {mode} p99 (kernel/raw)", b5[mode]["p99_ratio"], "<=", 1.5)
    if b6 := r.get("b6_bridge"):
        _check(t, "B6 bridge pipelined (ratio to raw pipe, same child)", b6["ratio"], ">=", 0.8)
    if b6n := r.get("b6_nats"):
        _check(t, "B6 NATS remote (ratio to raw nats-py)", b6n["ratio"], ">=", 0.5)
    return t


async def run_all(names: list[str], quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in names:
        started = time.perf_counter()
        print(f"bench.kernel: {name} ...", file=sys.stderr, flush=True)
        results[name] = await BENCHES[name](quick)
        results[name]["seconds"] = round(time.perf_counter() - started, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kernel", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and trials")
    parser.add_argument("--only", help=f"comma-separated subset of: {','.join(BENCHES)}")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = set(names) - set(BENCHES)
    if unknown:
        parser.error(f"unknown bench: {', '.join(sorted(unknown))}")
    logging.basicConfig(level=logging.ERROR)  # handle timeouts in B3 are expected, not news
    started = time.perf_counter()
    load_before = os.getloadavg()
    results = asyncio.run(run_all(names, args.quick))
    document = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "quick": args.quick,
        },
        "results": results,
        "targets": targets(results),
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(document, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

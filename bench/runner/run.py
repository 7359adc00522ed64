import argparse
import asyncio
import json
import os
import platform


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runner")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument(
        "--only",
        choices=("all", "forked"),
        default="all",
        help="forked: only the CPU of a trivial run forked from the warm zygote, beside the floor's",
    )
    parser.add_argument("--runs", type=int, default=0, help="forked runs of each kind (default 60, 10 with --quick)")
    args = parser.parse_args()
    runs = args.runs or (10 if args.quick else 60)
    from bench.runner import cold_start, forked, hypervisor_overhead, sandbox_overhead

    if args.only == "forked":
        machine = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
        print(json.dumps({"machine": machine, "forked": forked.measure(runs)}, indent=2))
        return 0

    reps = 3 if args.quick else 15
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
        "cold_start": cold_start.measure(reps),
        "hypervisor": asyncio.run(hypervisor_overhead.measure(20 if args.quick else 200, 5 if args.quick else 40)),
        "sandbox": asyncio.run(sandbox_overhead.measure(5 if args.quick else 40)),
        "forked": forked.measure(runs),
    }
    print(json.dumps(result, indent=2))
    return 0

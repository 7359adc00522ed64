"""`uv run python -m bench.ui [--runs 20000] [--audit 100000]`: each web UI page's server-side time
(the `Server-Timing` core-api adds to every /ui response: from the UI's router to the first byte,
so neither the network nor the client is counted) on a filled history vs the same page on an
empty one, in the same run. The history is filled by `bench.history`'s own code (two stacks side
by side, copies of a real run's documents, buckets reserved, vacuumed); the full size of the history
benchmark is `--runs 100000 --audit 1000000`. Prints JSON: p50/p99 per page per side, the ratio,
and whether the filled side's p99 is under the 100 ms goal."""

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import httpx

from bench.dispatch.probe import summary_ms
from bench.history.__main__ import Side, prepare, ratios
from bench.history.ui import sign_in

GOAL_MS = 100.0


async def _server_ms(ui: httpx.AsyncClient, path: str) -> float:
    r = await ui.get(path)
    r.raise_for_status()
    timing = r.headers.get("server-timing", "")
    if not timing.startswith("app;dur="):
        raise RuntimeError(f"{path}: no Server-Timing in the answer ({timing!r})")
    return float(timing.removeprefix("app;dur=")) / 1000  # summary_ms takes seconds


async def pages(side: Side) -> dict[str, str]:
    """Every page an admin reads, with ids from the side's own history."""
    api = side.api
    run_id = side.run_ids[len(side.run_ids) // 2]
    run = (await api.get(f"/v1/runs/{run_id}")).json()  # type: ignore[union-attr]  # a side's client is set before its pages are read
    agent_id = (await api.get("/v1/agents", params={"limit": 1})).json()["items"][0]["id"]  # type: ignore[union-attr]  # a side's client is set before its pages are read
    return {
        "board": "/ui/board",
        "board_lanes": "/ui/board/lanes",
        "goals": "/ui/goals",
        "runs": "/ui/runs",
        "runs_status_failed": "/ui/runs?status=failed",
        "runs_of_task": f"/ui/runs?task_id={run['task_id']}",
        "run": f"/ui/runs/{run_id}",
        "task": f"/ui/tasks/{run['task_id']}",
        "approvals": "/ui/approvals",
        "agents": "/ui/agents",
        "agent": f"/ui/agents/{agent_id}",
        "skills": "/ui/skills",
        "memory": "/ui/memory",
        "keys": "/ui/admin/keys",
        "audit": "/ui/admin/audit",
    }


async def measure(sides: list[Side], samples: int) -> dict:
    paths = {side.name: await pages(side) for side in sides}
    for side in sides:
        side.ui = await sign_in(side.stack.api_url, side.key)
    out: dict = {}
    for name in paths[sides[0].name]:
        times: dict[str, list[float]] = {s.name: [] for s in sides}
        for i in range(samples):  # alternating, so both sides see the same load on a shared box
            for side in sides if i % 2 == 0 else list(reversed(sides)):
                times[side.name].append(await _server_ms(side.ui, paths[side.name][name]))  # type: ignore[arg-type]  # a side's UI client is signed in before timing
        out[name] = {side: summary_ms(xs) for side, xs in times.items()}
        print(name, json.dumps(out[name]), file=sys.stderr, flush=True)  # progress: the fill and pages take minutes
    return out


async def main_async(args: argparse.Namespace) -> dict:
    home = Path(tempfile.mkdtemp(prefix="nexus-bench-ui-"))
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "note": "shared, contended box"},
        "what": "server-side time per UI page (Server-Timing), ms; same pages on an empty and a filled history",
        "sizes": {
            "empty": {"runs": args.empty_runs, "audit_entries": args.empty_runs},
            "filled": {
                "runs": args.runs,
                "tasks": args.runs,
                "sessions": args.runs,
                "run_events_per_run": args.events_per_run,
                "audit_entries": args.audit,
            },
        },
        "full_size_command": "uv run python -m bench.ui --runs 100000 --audit 1000000",
    }
    sides: list[Side] = []
    try:
        empty, result["fill_empty"] = await prepare("empty", home / "empty", args.empty_runs, args.empty_runs, args)
        sides.append(empty)
        filled, result["fill_filled"] = await prepare("filled", home / "filled", args.runs, args.audit, args)
        sides.append(filled)
        figures = await measure(sides, args.samples)
        result["figures"] = figures
        result["ratio_filled_over_empty"] = ratios(figures)
        result["filled_p99_under_100ms"] = {k: v["filled"]["p99_ms"] < GOAL_MS for k, v in figures.items()}
    finally:
        await close_sides(sides)
        shutil.rmtree(home, ignore_errors=True)
    return result


async def close_sides(sides: list[Side]) -> None:
    for side in sides:
        for client in (side.api, side.ui):
            if client:
                await client.aclose()
        if side.mongo:
            await side.mongo.close()
        side.stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ui")
    parser.add_argument("--runs", type=int, default=20_000, help="runs (and as many tasks and sessions) to fill")
    parser.add_argument("--audit", type=int, default=100_000, help="audit entries to fill")
    parser.add_argument(
        "--empty-runs", type=int, default=64, help="runs, tasks, sessions, audit entries on the empty side"
    )
    parser.add_argument("--events-per-run", type=int, default=7, help="run events copied per run")
    parser.add_argument("--samples", type=int, default=50, help="requests per page per side")
    parser.add_argument("--handler", default=None, help=argparse.SUPPRESS)  # bench.history's prepare reads it
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()

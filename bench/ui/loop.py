"""`uv run python -m bench.ui.loop [--runs 2000] [--secs 30]`: the agent page and the runs page, each
rendered in a loop for `--secs` on one filled stack (`bench.history`'s fill), server-side time
(`Server-Timing`). Prints p50 / p98 per page and every render over three times its page's median with
the second of the loop it came in: slow renders bunched in a few seconds are a burst of the box's load,
slow renders at a fixed period would be a timer of the stack's own."""

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.history.__main__ import prepare
from bench.history.ui import sign_in
from bench.ui.__main__ import close_sides


async def main_async(args: argparse.Namespace) -> dict:
    home = Path(tempfile.mkdtemp(prefix="nexus-bench-ui-loop-"))
    side, _ = await prepare("filled", home / "filled", args.runs, args.runs, args)
    out: dict = {"machine": {"cpus": os.cpu_count(), "note": "shared, contended box"}, "runs": args.runs, "pages": {}}
    try:
        agent_id = (await side.api.get("/v1/agents", params={"limit": 1})).json()["items"][0]["id"]  # type: ignore[union-attr]  # set by prepare()
        side.ui = ui = await sign_in(side.stack.api_url, side.key)
        for name, path in (("agent", f"/ui/agents/{agent_id}"), ("runs", "/ui/runs")):
            renders: list[tuple[float, float]] = []  # (second of the loop, server-side ms)
            load = os.getloadavg()[0]
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.secs:
                r = await ui.get(path)
                r.raise_for_status()
                renders.append(
                    (round(time.monotonic() - t0, 2), float(r.headers["server-timing"].removeprefix("app;dur=")))
                )
            ms = sorted(x for _, x in renders)
            p50 = ms[len(ms) // 2]
            out["pages"][name] = {
                "n": len(ms),
                "p50_ms": p50,
                "p98_ms": ms[int(len(ms) * 0.98)],
                "slow_renders_at_s_ms": [x for x in renders if x[1] > 3 * p50],
                "loadavg_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
            }
    finally:
        await close_sides([side])
        shutil.rmtree(home, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ui.loop")
    parser.add_argument("--runs", type=int, default=2000, help="runs (and as many tasks and sessions) to fill")
    parser.add_argument("--secs", type=float, default=30.0, help="seconds each page is rendered in a loop")
    parser.add_argument("--events-per-run", type=int, default=7, help=argparse.SUPPRESS)  # bench.history's fill
    parser.add_argument("--handler", default=None, help=argparse.SUPPRESS)  # bench.history's prepare reads it
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()

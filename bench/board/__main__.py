"""`uv run python -m bench.board [--seconds 20] [--tasks 10]`: sync lag, task change → provider call,
at 100 and 1,000 changes a minute against the Plane double with Plane's real rate limit (60
requests a minute per key), through a real board-sync process on real NATS and FerretDB.
Same-run baseline: the same load against a Plane double without a rate limit."""

import argparse
import asyncio
import json

from bench.board.load import run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0, help="how long each rate is offered")
    ap.add_argument("--tasks", type=int, default=10, help="tasks whose status the changes flip")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args.seconds, args.tasks)), indent=2))


if __name__ == "__main__":
    main()

"""`nexus-kernel`: write a config template, or run the demo.

nexus-kernel --generate-config config.toml
nexus-kernel demo -n 100 -d 10 --log-level debug --log-format json
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from nexus.kernel.config import ConfigError, generate_config, load_config
from nexus.kernel.demo import run_demo
from nexus.kernel.logs import configure_logging


def _add_generate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generate-config", metavar="FILE", help="write a default config file and exit")
    parser.add_argument("--force", action="store_true", help="with --generate-config: overwrite FILE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nexus-kernel", description="Nexus agent kernel")
    _add_generate(parser)
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="run N agents passing messages and print live throughput")
    demo.add_argument("-c", "--config", metavar="FILE", help="TOML config (default: the usual locations)")
    demo.add_argument("-l", "--log-level", choices=["trace", "debug", "info", "warn", "error"])
    demo.add_argument("-f", "--log-format", choices=["compact", "json", "pretty"])
    demo.add_argument("-n", "--num-agents", type=int, default=2, metavar="N", help="agents to spawn (default 2)")
    demo.add_argument(
        "-d", "--duration", type=float, default=0, metavar="SECONDS", help="how long to run; 0 = until Ctrl-C"
    )
    _add_generate(demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.generate_config:
        try:
            path = generate_config(args.generate_config, force=args.force)
        except ConfigError as exc:
            print(f"nexus-kernel: {exc}", file=sys.stderr)
            return 1
        print(f"Generated default configuration at: {path}")
        return 0
    if args.command != "demo":
        parser.print_help()
        return 2
    if args.num_agents < 1:
        parser.error("--num-agents must be at least 1")
    if args.duration < 0:
        parser.error("--duration must be 0 or more")
    try:
        config, source = load_config(args.config)
    except ConfigError as exc:
        print(f"nexus-kernel: {exc}", file=sys.stderr)
        return 1
    configure_logging(args.log_level or config.logging.level, args.log_format or config.logging.format)
    logging.getLogger("nexus.kernel").info("config from %s: %s", source or "defaults", config.kernel)

    try:
        return asyncio.run(run_demo(config, args.num_agents, args.duration))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

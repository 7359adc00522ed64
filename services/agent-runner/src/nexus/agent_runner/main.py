"""agent-runner's entry point: become the agent the run config describes, then exit.

Cold start (process start to the first event) is measured (bench/runner): the first event goes
out through first_event.py before anything heavy is imported; everything else is imported after."""

import os
import sys


def start(environ: dict[str, str], *, announced: bool = False) -> int:
    """Run the agent the run config names; the exit code. Both a fresh process (`main`) and a child forked
    from the worker's warm zygote, which has `lifecycle` imported already, come in here."""
    from nexus.agent_runner.lifecycle import start as live

    return live(environ, announced=announced)


def main() -> None:
    environ = dict(os.environ)
    from nexus.agent_runner.first_event import announce

    announced = announce(environ)
    sys.exit(start(environ, announced=announced))


if __name__ == "__main__":
    main()

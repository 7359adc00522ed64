"""Benchmarks of agent-runner (issue 4): cold start, hypervisor overhead and the command sandbox's overhead, each against a
baseline measured in the same run. `uv run python -m bench.runner [--quick]` prints JSON."""

import sys

from bench.runner.run import main

sys.exit(main())

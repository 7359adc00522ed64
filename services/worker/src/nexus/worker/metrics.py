"""The worker's metrics. Runs' final states are core-api's to count (nexus_runs_total); the worker counts what
it sees happen to executions."""

from prometheus_client import Counter, Gauge, Histogram

from nexus.db.stats import COMMANDS as DB_COMMANDS, SECONDS as DB_SECONDS  # noqa: F401 — its database commands
from nexus.events.consumer import CONSUMED, DEAD_LETTERS, LOOP_RESTARTS  # noqa: F401 — its consumers'
from nexus.events.lag import PENDING  # noqa: F401 — its durable consumers' lag

EXECUTIONS = Counter(
    "nexus_run_executions",
    "Run executions by what the worker saw: launched, lost (its process or Job gone), "
    "timed_out (stopped at its wall-clock limit), superseded (its launch claim taken while the worker stood still: "
    "not started)",
    ["event"],
)
ACTIVE = Gauge("nexus_runs_active", "Runs this worker holds a slot for (launched or adopted, not yet exited)")
WAITING = Gauge("nexus_launches_waiting", "Launch commands waiting for a free slot")
LAUNCH_LATENCY = Histogram(
    "nexus_launch_duration_seconds",
    "From the worker starting a launch to its runtime started (process forked, Job created)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SCHEDULE_FIRES = Counter("nexus_schedule_fires", "Schedule occurrences fired", ["reason"])
ZYGOTE_UP = Gauge("nexus_runner_zygote_up", "1 while this worker's warm runner zygote is ready to fork runs")
RUNNER_STARTS = Counter(
    "nexus_runner_starts", "Runner processes started, by how: forked from the zygote or cold", ["how"]
)
LAUNCH_CHECKS = Counter(
    "nexus_launch_checks",
    "How each launch was judged current: bus (first delivery, no cancel heard: no read) or read (the run was read)",
    ["how"],
)
RELAYED = Counter(
    "nexus_relayed_publishes",
    "Forked runs' publishes the worker relayed onto its connection (published), and relays it closed (refused)",
    ["outcome"],
)

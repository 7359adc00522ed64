"""The worker's metrics. core-api counts the endings it decides (succeeded, failed, cancelled)."""

from prometheus_client import Counter, Gauge, Histogram

from nexus.observability.metrics import RUNS_TOTAL

RUNS = RUNS_TOTAL  # shared with core-api

ACTIVE = Gauge("nexus_runs_active", "Runs this worker holds a slot for (launched or adopted, not yet exited)")
WAITING = Gauge("nexus_launches_waiting", "Launch commands waiting for a free slot")
LAUNCH_LATENCY = Histogram(
    "nexus_dispatch_latency_seconds", "From launch command to runtime started",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SCHEDULE_FIRES = Counter("nexus_schedule_fires", "Schedule occurrences fired", ["reason"])
ZYGOTE_UP = Gauge("nexus_runner_zygote_up", "1 while this worker's warm runner zygote is ready to fork runs")
RUNNER_STARTS = Counter(
    "nexus_runner_starts", "Runner processes started, by how: forked from the zygote or cold", ["how"]
)

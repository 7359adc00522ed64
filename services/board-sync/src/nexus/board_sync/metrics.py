"""board-sync's metrics: sync lag, provider calls by provider and outcome, queue depth, drift."""

from prometheus_client import Counter, Gauge, Histogram

from nexus.db.stats import COMMANDS as DB_COMMANDS, SECONDS as DB_SECONDS  # noqa: F401 — its database commands
from nexus.events.consumer import CONSUMED, DEAD_LETTERS, LOOP_RESTARTS  # noqa: F401 — its subscribers'
from nexus.events.lag import PENDING  # noqa: F401 — its durable consumers' lag

SYNC_LAG = Histogram(
    "nexus_board_sync_lag_seconds",
    "From a task change to the provider call that reflects it",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
PROVIDER_CALLS = Counter("nexus_board_provider_calls_total", "Calls to an external board", ["provider", "outcome"])
QUEUE_DEPTH = Gauge("nexus_board_sync_queue_depth", "Changes waiting for board-sync in JetStream", ["consumer"])
DRIFT_REPAIRED = Counter(
    "nexus_board_drift_repaired_total",
    "Linked items found differing from the internal board and repaired",
    ["provider"],
)
EXTERNAL_CHANGES = Counter(
    "nexus_board_external_changes_total", "External board edits by what board-sync did", ["provider", "outcome"]
)

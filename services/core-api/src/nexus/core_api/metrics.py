"""core-api's metrics. Importing this module registers every family core-api exports (the dashboard check
reads the live registry after importing each service's metrics module)."""

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from nexus.core_api.budgets.spend import LEFT_TOKENS, LEFT_USD, SPENT_TOKENS, SPENT_USD  # noqa: F401 — budgets
from nexus.core_api.nats_monitor import CONNECTIONS  # noqa: F401 — NATS's monitoring endpoint, read by core-api
from nexus.core_api.observability import LATENCY, REQUESTS  # noqa: F401 — HTTP, beside the middleware that counts
from nexus.db.stats import COMMANDS as DB_COMMANDS, SECONDS as DB_SECONDS  # noqa: F401 — its database commands
from nexus.events.bus import PUBLISHED
from nexus.events.consumer import CONSUMED, DEAD_LETTERS, LOOP_RESTARTS  # noqa: F401 — its consumers'
from nexus.events.lag import PENDING  # noqa: F401 — its durable consumers' lag
from nexus.observability.metrics import RUNS_TOTAL as RUNS_TOTAL  # runs by final state: core-api owns final states


class _Published(Collector):
    """What core-api published to JetStream (nexus.events.bus counts it), read at each scrape."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("nexus_bus_published", "Messages published to JetStream", value=PUBLISHED.messages)
        yield CounterMetricFamily(
            "nexus_bus_publish_waits",
            "Waits for JetStream's acks: one per publish awaited alone, one per batch published together",
            value=PUBLISHED.waits,
        )


REGISTRY.register(_Published())

RUN_DURATION = Histogram(
    "nexus_run_duration_seconds",
    "From run creation to its final state",
    ["status"],
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
# A ready task is dispatched (its run created) the moment it becomes ready; the runner's first event is its
# `running`, as core-api ingests it. Observed once per run, on its first attempt.
DISPATCH_LATENCY = Histogram(
    "nexus_dispatch_latency_seconds",
    "From a ready task's dispatch to its runner's first event (the run reported running)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
LLM_TOKENS = Counter(
    "nexus_llm_tokens",
    "Tokens model calls used, by provider, model, agent and kind (input or output)",
    ["provider", "model", "agent", "kind"],
)
LLM_COST = Counter(
    "nexus_llm_cost_usd",
    "What model calls cost in US dollars, by provider, model and agent",
    ["provider", "model", "agent"],
)

APPROVALS_PENDING = Gauge(
    "nexus_approvals_pending", "Approvals waiting for a decision (read from the database every few seconds)"
)
APPROVAL_DECISION = Histogram(
    "nexus_approval_decision_seconds",
    "From an approval's request to its decision, by decision (approved, rejected, expired)",
    ["decision"],
    buckets=(1, 5, 15, 30, 60, 300, 900, 1800, 3600, 14400, 86400),
)
# The agent kernel lives in runners, which are not scraped: each run reports its kernel on its heartbeats.
KERNEL_MAILBOX_DEPTH = Histogram(
    "nexus_kernel_mailbox_depth",
    "The deepest mailbox of a run's agent kernel, at each heartbeat",
    buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
KERNEL_DROPPED = Counter(
    "nexus_kernel_mailbox_dropped", "Messages runs' agent kernels dropped (full mailboxes, shutdown)"
)
_dropped_so_far: dict[str, int] = {}
RUN_EVENTS_DROPPED = Counter(
    "nexus_run_events_dropped", "Run events not stored: their run was past the events core-api keeps of one run"
)


def count_heartbeat(run_id: str, mailbox_depth: int, mailbox_dropped: int) -> None:
    KERNEL_MAILBOX_DEPTH.observe(max(0, mailbox_depth))
    before = _dropped_so_far.get(run_id, 0)
    if mailbox_dropped > before:
        KERNEL_DROPPED.inc(mailbox_dropped - before)
        if len(_dropped_so_far) > 100_000:  # bounded: a run's count restarts (counting its drops again) after a clear
            _dropped_so_far.clear()
        _dropped_so_far[run_id] = mailbox_dropped


def count_llm_call(
    agent_id: str, provider: str, model: str, input_tokens: int, output_tokens: int, cost_usd: float
) -> None:
    LLM_TOKENS.labels(provider, model, agent_id, "input").inc(max(0, input_tokens))
    LLM_TOKENS.labels(provider, model, agent_id, "output").inc(max(0, output_tokens))
    LLM_COST.labels(provider, model, agent_id).inc(max(0.0, cost_usd))

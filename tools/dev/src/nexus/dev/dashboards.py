"""The Grafana dashboards as code: each panel beside the metric families it reads, built with Grafana's
foundation SDK and written to deploy/grafana/dashboards (`make dashboards`; a test fails while the committed
JSON differs from what this module builds). A family a service exports without a panel is named in
UNPANELLED with the reason."""

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, Row
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef, GridPos

DASHBOARDS_DIR = Path(__file__).resolve().parents[5] / "deploy" / "grafana" / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "[$__rate_interval]"


def quantiles(metric: str, by: str = "") -> list[tuple[str, str]]:
    """p50 and p99 of a histogram, optionally per label."""
    labels = f"{by}, le" if by else "le"
    legend = f"{{{{{by}}}}} " if by else ""
    return [
        (f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket{RATE})))", f"{legend}p{int(q * 100)}")
        for q in (0.5, 0.99)
    ]


@dataclass
class Panel:
    title: str
    description: str
    queries: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8


@dataclass
class Section:
    title: str
    panels: list[Panel] = field(default_factory=list)


OVERVIEW = [
    Section(
        "Runs",
        [
            Panel(
                "Runs per minute by final state",
                "Runs ending per minute, by final state, counted once by core-api (which owns final states).",
                [(f"sum by (status) (rate(nexus_runs_total{RATE})) * 60", "{{status}}")],
            ),
            Panel(
                "Active runs",
                "Runs the workers hold a slot for.",
                [("sum(nexus_runs_active)", "active")],
                kind="stat",
                width=4,
            ),
            Panel(
                "Run duration",
                "From run creation to its final state.",
                quantiles("nexus_run_duration_seconds"),
                unit="s",
                width=6,
            ),
            Panel(
                "Dispatch latency (task ready → runner's first event)",
                "From a ready task's dispatch to its runner's first event, as core-api ingests it (first attempts).",
                quantiles("nexus_dispatch_latency_seconds"),
                unit="s",
                width=6,
            ),
            Panel(
                "Executions the workers saw",
                "Launched, lost (process or Job gone) and stopped at the wall clock, per 5 minutes.",
                [("sum by (event) (increase(nexus_run_executions_total[5m]))", "{{event}}")],
            ),
            Panel(
                "Launches",
                "Launch commands waiting for a slot, and how long starting a runtime takes (p99).",
                [
                    ("sum(nexus_launches_waiting)", "waiting"),
                    (
                        f"histogram_quantile(0.99, sum by (le) (rate(nexus_launch_duration_seconds_bucket{RATE})))",
                        "start p99 (s)",
                    ),
                ],
            ),
            Panel(
                "Runner starts",
                "Runners forked warm from the zygote or started cold, and whether each worker's zygote is up.",
                [
                    (f"sum by (how) (rate(nexus_runner_starts_total{RATE})) * 60", "{{how}} / min"),
                    ("min(nexus_runner_zygote_up)", "zygote up (min)"),
                ],
            ),
            Panel(
                "Launches judged current",
                "How workers judged each launch current: by what the bus told them (no database read) or by"
                " reading the run (redeliveries, a cancel heard, takeovers, the first seconds after a start).",
                [(f"sum by (how) (rate(nexus_launch_checks_total{RATE})) * 60", "{{how}} / min")],
            ),
            Panel(
                "Relayed publishes",
                "Forked runs' publishes the workers relayed onto their own connections, and relays a worker closed"
                " (a frame a run may not send: another run's subject, a bad header, a flood). Refused should stay 0.",
                [(f"sum by (outcome) (rate(nexus_relayed_publishes_total{RATE})) * 60", "{{outcome}} / min")],
            ),
            Panel(
                "Approvals",
                "Approvals waiting for a decision, and how long a decision takes (p50, p99, by decision).",
                [
                    ("sum(nexus_approvals_pending)", "pending"),
                    *quantiles("nexus_approval_decision_seconds", "decision"),
                ],
            ),
            Panel(
                "Schedule occurrences fired",
                "Per 5 minutes, by why they fired.",
                [("sum by (reason) (increase(nexus_schedule_fires_total[5m]))", "{{reason}}")],
            ),
        ],
    ),
    Section(
        "Models",
        [
            Panel(
                "LLM tokens per minute",
                "Tokens of model calls, by provider, model and kind (input or output).",
                [
                    (
                        f"sum by (provider, model, kind) (rate(nexus_llm_tokens_total{RATE})) * 60",
                        "{{provider}}/{{model}} {{kind}}",
                    )
                ],
                width=12,
            ),
            Panel(
                "LLM cost per hour by agent",
                "What model calls cost, in US dollars per hour, by agent.",
                [(f"sum by (agent) (rate(nexus_llm_cost_usd_total{RATE})) * 3600", "{{agent}}")],
                unit="currencyUSD",
                width=12,
            ),
        ],
    ),
    Section(
        "Budgets",
        [
            Panel(
                "Budget spent",
                "What each goal, and each agent today, has spent of its budget: US dollars and tokens "
                "(set as core-api checks budgets at dispatch and as runs end).",
                [
                    ("max by (scope, id) (nexus_budget_spent_usd)", "{{scope}} {{id}} USD"),
                    ("max by (scope, id) (nexus_budget_spent_tokens)", "{{scope}} {{id}} tokens"),
                ],
                width=12,
            ),
            Panel(
                "Budget remaining",
                "What is left of each goal's budget and of each capped agent's day.",
                [
                    ("max by (scope, id) (nexus_budget_remaining_usd)", "{{scope}} {{id}} USD"),
                    ("max by (scope, id) (nexus_budget_remaining_tokens)", "{{scope}} {{id}} tokens"),
                ],
                width=12,
            ),
        ],
    ),
    Section(
        "Messaging",
        [
            # max, not sum: every replica of the owning service reads (and exports) the same consumer's info.
            Panel(
                "Consumer lag",
                "Messages not yet delivered to each durable consumer, and delivered but not yet acknowledged "
                "(read from JetStream's consumer info by the service that owns the consumer).",
                [
                    ("max by (stream, consumer) (nexus_consumer_pending_messages)", "{{consumer}} pending"),
                    ("max by (stream, consumer) (nexus_consumer_ack_pending_messages)", "{{consumer}} unacked"),
                ],
            ),
            Panel(
                "Redeliveries",
                "Messages delivered more than once and not yet acknowledged, by consumer.",
                [("max by (stream, consumer) (nexus_consumer_redelivered_messages)", "{{consumer}}")],
            ),
            Panel(
                "Consumed messages by outcome",
                "Per second, by consumer and outcome (ok, retried, dead_letter).",
                [
                    (
                        f"sum by (consumer, outcome) (rate(nexus_consumer_messages_total{RATE}))",
                        "{{consumer}} {{outcome}}",
                    )
                ],
            ),
            Panel(
                "Dead-lettered messages (per 5 min)",
                "Messages a consumer could not handle, by original subject.",
                [("sum by (subject) (increase(nexus_dlq_messages_total[5m]))", "{{subject}}")],
            ),
            Panel(
                "Agent kernel mailboxes",
                "Runs' agent kernels, from their heartbeats: the deepest mailbox (p99) and messages dropped.",
                [
                    (
                        f"histogram_quantile(0.99, sum by (le) (rate(nexus_kernel_mailbox_depth_bucket{RATE})))",
                        "deepest mailbox p99",
                    ),
                    ("sum(increase(nexus_kernel_mailbox_dropped_total[5m]))", "dropped / 5 min"),
                ],
            ),
            Panel(
                "Run events dropped past a run's cap (per 5 min)",
                "Events core-api did not store because their run had sent more than it keeps of one run "
                "(a runner gone wrong, or its credential in other hands); the run's status still applies.",
                [("sum(increase(nexus_run_events_dropped_total[5m]))", "dropped / 5 min")],
            ),
            Panel(
                "Consumer loops restarted",
                "Loops that died and were restarted, per 5 minutes.",
                [("sum by (job, loop) (increase(nexus_loop_restarts_total[5m]))", "{{job}} {{loop}}")],
            ),
            Panel(
                "Published messages",
                "Messages published to JetStream per second, and the waits for their acks (a batch published "
                "together is one wait).",
                [
                    (f"sum by (job) (rate(nexus_bus_published_total{RATE}))", "{{job}} messages"),
                    (f"sum by (job) (rate(nexus_bus_publish_waits_total{RATE}))", "{{job}} waits"),
                ],
            ),
            # NATS's own monitoring endpoint (/varz, /jsz), read by core-api; max: each replica of a stream reports it.
            Panel(
                "JetStream streams",
                "Messages and bytes each stream holds (NATS's /jsz, read by core-api).",
                [
                    ("max by (stream) (nexus_nats_stream_messages)", "{{stream}} messages"),
                    ("max by (stream) (nexus_nats_stream_bytes)", "{{stream}} bytes"),
                ],
                width=12,
            ),
            Panel(
                "NATS connections",
                "Clients connected to each NATS server (its /varz), and whether core-api could read each "
                "server's monitoring endpoint (1: read).",
                [
                    ("sum by (server) (nexus_nats_connections)", "{{server}}"),
                    ("min by (endpoint) (nexus_nats_monitor_up)", "monitoring read: {{endpoint}}"),
                ],
                width=12,
            ),
        ],
    ),
    Section(
        "Database",
        [
            Panel(
                "Database commands per second",
                "Commands each service sends, by collection (the cost of a run shows here first).",
                [(f"sum by (job, collection) (rate(nexus_db_commands_total{RATE}))", "{{job}} {{collection}}")],
                unit="ops",
                width=12,
            ),
            Panel(
                "Time waiting for the database",
                "Seconds per second each service spends waiting for database commands, by collection.",
                [(f"sum by (job, collection) (rate(nexus_db_command_seconds_total{RATE}))", "{{job}} {{collection}}")],
                unit="s",
                width=12,
            ),
            Panel(
                "Documents read per second",
                "Documents each service's reads return, by collection: the embedded database's cost follows them.",
                [
                    (
                        f"sum by (job, collection) (rate(nexus_db_documents_returned_total{RATE}))",
                        "{{job}} {{collection}}",
                    )
                ],
                unit="ops",
                width=24,
            ),
        ],
    ),
    Section(
        "HTTP (core-api)",
        [
            Panel(
                "Requests per second by route",
                "",
                [(f"sum by (route) (rate(nexus_http_requests_total{RATE}))", "{{route}}")],
                unit="reqps",
            ),
            Panel(
                "Latency by route",
                "p50 and p99 per route template.",
                quantiles("nexus_http_request_duration_seconds", "route"),
                unit="s",
            ),
            Panel(
                "Errors by route",
                "Share of 5xx and 4xx answers per route.",
                [
                    (
                        f'sum by (route) (rate(nexus_http_requests_total{{status=~"5.."}}{RATE}))'
                        f" / sum by (route) (rate(nexus_http_requests_total{RATE}))",
                        "{{route}} 5xx",
                    ),
                    (
                        f'sum by (route) (rate(nexus_http_requests_total{{status=~"4.."}}{RATE}))'
                        f" / sum by (route) (rate(nexus_http_requests_total{RATE}))",
                        "{{route}} 4xx",
                    ),
                ],
                unit="percentunit",
            ),
        ],
    ),
    Section(
        "Board sync",
        [
            Panel(
                "Sync lag (task change → provider call)",
                "",
                quantiles("nexus_board_sync_lag_seconds", "provider"),
                unit="s",
                width=6,
            ),
            Panel(
                "Provider calls by outcome",
                "",
                [
                    (
                        f"sum by (provider, outcome) (rate(nexus_board_provider_calls_total{RATE}))",
                        "{{provider}} {{outcome}}",
                    )
                ],
                width=6,
            ),
            Panel(
                "Board changes waiting",
                "",
                [("max by (consumer) (nexus_board_sync_queue_depth)", "{{consumer}}")],
                width=6,
            ),
            Panel(
                "Drift repaired and external edits",
                "Per 5 minutes.",
                [
                    (
                        "sum by (provider) (increase(nexus_board_drift_repaired_total[5m]))",
                        "{{provider}} drift repaired",
                    ),
                    (
                        "sum by (provider, outcome) (increase(nexus_board_external_changes_total[5m]))",
                        "{{provider}} external {{outcome}}",
                    ),
                ],
                width=6,
            ),
        ],
    ),
    Section(
        "Telegram",
        [
            Panel(
                "Chat updates by outcome",
                "Updates from Telegram, by what the gateway did with them.",
                [(f"sum by (outcome) (rate(nexus_telegram_updates_total{RATE})) * 60", "{{outcome}} / min")],
                width=12,
            ),
            Panel(
                "Sends by outcome",
                "Outbox messages sent to Telegram, failed, or retried.",
                [(f"sum by (outcome) (rate(nexus_telegram_outbox_total{RATE})) * 60", "{{outcome}} / min")],
                width=12,
            ),
        ],
    ),
]

# Families the services export that no panel shows, and why (by name, or by prefix).
UNPANELLED: dict[str, str] = {}
UNPANELLED_PREFIXES = {
    "process_": (
        "the Prometheus client's process metrics (CPU, memory, file descriptors): for ad-hoc queries, not the overview"
    ),
    "python_": "the Prometheus client's interpreter metrics (garbage collector, version): for ad-hoc queries",
}


def build(sections: list[Section], *, uid: str, title: str, description: str) -> dict:
    board = (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["nexus"])
        .editable()
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )
    panel_id, y = 1, 0
    for section in sections:
        board = board.with_row(Row(section.title).id(panel_id).grid_pos(_grid(0, y, 24, 1)))
        panel_id, y, x = panel_id + 1, y + 1, 0
        for p in section.panels:
            if x + p.width > 24:
                x, y = 0, y + 8
            builder = (
                (stat.Panel() if p.kind == "stat" else timeseries.Panel())
                .id(panel_id)
                .title(p.title)
                .description(p.description)
            )
            builder = builder.datasource(DATASOURCE).unit(p.unit).grid_pos(_grid(x, y, p.width, 8))
            for ref, (expr, legend) in zip("ABCDEFGH", p.queries, strict=False):
                builder = builder.with_target(
                    prometheus.Dataquery().datasource(DATASOURCE).expr(expr).legend_format(legend).ref_id(ref)
                )
            board = board.with_panel(builder)
            panel_id, x = panel_id + 1, x + p.width
        y += 8
    out = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(board.build()))
    for panel in out["panels"]:
        if panel.get("options") is None and panel["type"] != "row":
            panel["options"] = {}  # the SDK leaves unset options null; Grafana wants an object
    return out


def _grid(x: int, y: int, w: int, h: int) -> GridPos:
    return GridPos(x=x, y=y, w=w, h=h)


DASHBOARDS = {
    "nexus-overview.json": lambda: build(
        OVERVIEW,
        uid="nexus-overview",
        title="Nexus — overview",
        description="Runs, models, messaging, the HTTP API, board sync and Telegram of a Nexus installation.",
    ),
}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name](), indent=2, sort_keys=True) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the Grafana dashboards built from code.")
    parser.add_argument("--out", type=Path, default=DASHBOARDS_DIR)
    args = parser.parse_args()
    for name in DASHBOARDS:
        (args.out / name).write_text(render(name))
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()

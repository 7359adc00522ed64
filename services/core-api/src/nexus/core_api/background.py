"""core-api's work besides HTTP, wired: each feature's NATS handlers on their consumers, and periodic sweeps."""

import asyncio
import logging

from nexus.core_api.approvals.service import count_pending, expire_due, tell_decided
from nexus.core_api.board import handlers as board_handlers
from nexus.core_api.chat_bindings import handlers as chat_handlers
from nexus.core_api.chat_queries.responder import serve_queries
from nexus.core_api.commands import serve_commands
from nexus.core_api.context import Context
from nexus.core_api.goals import handlers as goals_handlers
from nexus.core_api.nats_monitor import watch_nats_monitor
from nexus.core_api.runs.ingest import RUN_EVENTS_CONSUMER, handle_run_event, ingest_group
from nexus.core_api.schedules import handlers as schedules_handlers
from nexus.core_api.sessions import handlers as sessions_handlers
from nexus.core_api.idempotency import forget_old as forget_old_keys
from nexus.core_api.workflow.engine import dispatch_waiting, plan_unplanned_goals, release_orphans, requeue_stale
from nexus.events.consumer import LOOPS, consume
from nexus.events.lag import watch_consumer_lag
from nexus.observability.health import OpsServer
from nexus.observability.periodic import every

log = logging.getLogger("nexus.core_api.background")


# Each feature's command subscribers (one per subject, FastStream), beside its handlers.
COMMAND_SUBSCRIBERS = (
    goals_handlers.subscribe,
    sessions_handlers.subscribe,
    chat_handlers.subscribe,
    schedules_handlers.subscribe,
    board_handlers.subscribe,
)


async def run_background(ctx: Context, stop: asyncio.Event) -> None:
    s = ctx.settings

    async def ready() -> bool:  # the bus is up and no consumer loop is down
        return ctx.nc.is_connected and LOOPS.healthy()

    ops = OpsServer(s.metrics_host, s.metrics_port, ready=ready)
    try:
        await ops.start()
    except OSError as exc:
        log.warning("ops port %d unavailable: %s", s.metrics_port, exc)
    jobs = [
        consume(
            ctx.js,
            durable="core-api-runs",
            handler=lambda d: handle_run_event(ctx, d),
            group_handler=lambda ds: ingest_group(ctx, ds),
            stop=stop,
            reclaim=True,  # what a killed core-api had fetched is stored at restart, not after the 30 s ack wait
            **RUN_EVENTS_CONSUMER,
        ),
        serve_commands(ctx, stop, COMMAND_SUBSCRIBERS),
        every(max(1.0, s.requeue_after_s / 3), stop, lambda: requeue_stale(ctx), what="requeue_stale"),
        every(max(1.0, s.requeue_after_s / 3), stop, lambda: release_orphans(ctx), what="release_orphans"),
        every(max(1.0, s.requeue_after_s / 3), stop, lambda: dispatch_waiting(ctx), what="dispatch_waiting"),
        every(max(1.0, s.requeue_after_s / 3), stop, lambda: plan_unplanned_goals(ctx), what="plan_unplanned_goals"),
        every(5.0, stop, lambda: expire_due(ctx), what="expire_due"),
        every(3600.0, stop, forget_old_keys, what="forget_old_keys"),
        every(max(1.0, s.requeue_after_s / 3), stop, lambda: tell_decided(ctx), what="tell_decided"),
        # Gauges for dashboards: one count, one question per durable, one read of each monitoring endpoint
        # every `nats_monitor_every_s` (30 s), which is not free at rest.
        every(s.nats_monitor_every_s, stop, lambda: count_pending(ctx), what="count_pending"),
        watch_consumer_lag(ctx.js, "core-api", stop, every_s=s.nats_monitor_every_s),
        watch_nats_monitor(s.nats_monitor_url, stop, every_s=s.nats_monitor_every_s),
        serve_queries(ctx, stop),
    ]
    try:
        await asyncio.gather(*jobs)
    finally:
        await ops.stop()

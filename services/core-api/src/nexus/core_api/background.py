"""core-api's work besides HTTP, wired: each feature's NATS handlers on their consumers, and periodic sweeps."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nexus.core_api.approvals.service import count_pending, expire_due
from nexus.core_api.board.handlers import cancel_task
from nexus.core_api.chat_bindings.handlers import handle_chat_command
from nexus.core_api.chat_queries.responder import serve_queries
from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError
from nexus.core_api.goals.handlers import follow_task
from nexus.core_api.nats_monitor import watch_nats_monitor
from nexus.core_api.runs.ingest import handle_run_event, ingest_group
from nexus.core_api.schedules.service import fire
from nexus.core_api.sessions.handlers import on_plan
from nexus.core_api.workflow.engine import requeue_stale
from nexus.events import payloads as p
from nexus.events.catalog import CMDS_STREAM, EVENTS_STREAM, RUNS_STREAM
from nexus.events.consumer import LOOPS, Delivery, Poison, consume
from nexus.events.lag import watch_consumer_lag
from nexus.observability.health import OpsServer
from nexus.observability.periodic import every

log = logging.getLogger("nexus.core_api.background")


async def _fire(ctx: Context, d: Delivery) -> None:
    await fire(ctx, d.payload)


# Each command is handled by its feature's handler.
COMMANDS: dict[type, Callable[[Context, Delivery], Awaitable[None]]] = {
    p.PlanChildren: on_plan,
    p.DecideApproval: lambda ctx, d: handle_chat_command(ctx, d.payload),
    p.CreateGoal: lambda ctx, d: handle_chat_command(ctx, d.payload),
    p.CancelRunRequest: lambda ctx, d: handle_chat_command(ctx, d.payload),
    p.FireSchedule: _fire,
    p.CancelTask: lambda ctx, d: cancel_task(ctx, d.payload),
}


async def handle_command(ctx: Context, d: Delivery) -> None:
    """A command the services refuse (a DomainError: what it names does not exist, it conflicts
    with the current state) can never succeed: it is dead-lettered with their reason at once."""
    handler = COMMANDS.get(type(d.payload))
    if handler is None:
        return
    try:
        await handler(ctx, d)
    except DomainError as exc:
        raise Poison(f"refused: {exc}") from exc


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
            stream=RUNS_STREAM,
            durable="core-api-runs",
            subject="nexus.run.>",
            handler=lambda d: handle_run_event(ctx, d),
            group_handler=lambda ds: ingest_group(ctx, ds),
            stop=stop,
            batch=512,
            concurrency=32,
            partition=lambda subject: subject.split(".")[2],
            max_ack_pending=8000,
            max_deliver=20,  # a database restart must not dead-letter run events: they are retried for minutes
            prefetch=True,
            reclaim=True,  # what a killed core-api had fetched is stored at restart, not after the 30 s ack wait
        ),
        consume(
            ctx.js,
            stream=CMDS_STREAM,
            durable="core-api-cmds",
            subject="nexus.cmd.core.>",
            handler=lambda d: handle_command(ctx, d),
            stop=stop,
        ),
        # A goal follows its tasks: every task event re-derives its goal's status (idempotent).
        consume(
            ctx.js,
            stream=EVENTS_STREAM,
            durable="core-api-goals",
            subject="nexus.evt.task.>",
            handler=lambda d: follow_task(ctx, d),
            stop=stop,
        ),
        every(max(1.0, s.requeue_after_s / 3), stop, lambda: requeue_stale(ctx), what="requeue_stale"),
        every(5.0, stop, lambda: expire_due(ctx), what="expire_due"),
        every(5.0, stop, lambda: count_pending(ctx), what="count_pending"),
        watch_consumer_lag(ctx.js, "core-api", stop),
        watch_nats_monitor(s.nats_monitor_url, stop),
        serve_queries(ctx, stop),
    ]
    try:
        await asyncio.gather(*jobs)
    finally:
        await ops.stop()

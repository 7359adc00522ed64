"""core-api's work besides HTTP: consuming run events and commands, and periodic sweeps."""

import asyncio
import logging
from datetime import timedelta

from nexus.core_api.approvals.service import count_pending, expire_due
from nexus.core_api.chat_queries.responder import serve_queries
from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError
from nexus.core_api.goals.events import follow_task
from nexus.core_api.nats_monitor import watch_nats_monitor
from nexus.core_api.runs.dispatch import command_launch
from nexus.core_api.runs.ingest import handle_run_event, ingest_group
from nexus.db.documents import Run, now
from nexus.db.writes import update_document
from nexus.events import payloads as p
from nexus.events.catalog import CMDS_STREAM, EVENTS_STREAM, RUNS_STREAM, spec
from nexus.events.consumer import LOOPS, Delivery, Poison, consume
from nexus.events.lag import watch_consumer_lag
from nexus.observability.health import OpsServer
from nexus.observability.periodic import every

log = logging.getLogger("nexus.core_api.background")


async def handle_command(ctx: Context, d: Delivery) -> None:
    """A command the services refuse (a DomainError: what it names does not exist, it conflicts
    with the current state) can never succeed: it is dead-lettered with their reason at once."""
    try:
        await _route_command(ctx, d)
    except DomainError as exc:
        raise Poison(f"refused: {exc}") from exc


async def _route_command(ctx: Context, d: Delivery) -> None:
    from nexus.core_api.sessions.meta import plan_children

    match d.payload:
        case p.PlanChildren():
            if d.subject != spec("core.plan_children").subject_for(run_id=d.payload.run_id):
                raise Poison(
                    f"a plan for run {d.payload.run_id} arrived on {d.subject}"
                )  # only a run's own subject is its word
            try:
                await plan_children(ctx, d.payload)
            except ValueError as exc:
                raise Poison(str(exc)) from exc
        case p.DecideApproval() | p.CreateGoal() | p.CancelRunRequest():
            from nexus.core_api.chat_bindings.commands import handle_chat_command

            await handle_chat_command(ctx, d.payload)
        case p.FireSchedule():
            from nexus.core_api.schedules.service import fire

            await fire(ctx, d.payload)
        case p.CancelTask():
            from nexus.core_api.board.external import cancel_task

            await cancel_task(ctx, d.payload)


async def requeue_stale(ctx: Context) -> int:
    """A run still `queued` long after its launch was commanded (core-api died before publishing,
    or the message was lost) is commanded again; the worker drops duplicates."""
    cutoff = now() - timedelta(seconds=ctx.settings.requeue_after_s)
    n = 0
    async for run in Run.find({"status": "queued", "updated_at": {"$lt": cutoff}}):
        await command_launch(ctx, run)
        await update_document(Run, run.id, {"$set": {"updated_at": now()}})
        n += 1
    return n


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

"""worker's entry point: consume launch/cancel commands, launch runs, sweep for lost ones, fire schedules."""

import asyncio
import logging
import os
import socket
from pathlib import Path

from nats.aio.client import Client as NATS

from nexus.db.connection import DbClient, connect_db, ping
from nexus.domain.settings import load_settings
from nexus.events.bus import Publisher, connect, ensure_key_value, ensure_streams
from nexus.events.catalog import BY_TYPE, CMDS_STREAM
from nexus.events.consumer import LOOPS, consume, supervised
from nexus.events.credentials import RunSigner
from nexus.events.lag import watch_consumer_lag
from nexus.observability.periodic import every
from nexus.observability.service import bootstrap, child_observability_env, start_ops, stop_event_on_signals
from nexus.worker.freshness import Freshness
from nexus.worker.intake import LaunchIntake
from nexus.worker.launcher import LAUNCH_BUCKET, Launcher
from nexus.worker.membership import WORKERS_BUCKET, Membership
from nexus.worker.recovery import Recovery
from nexus.worker.runtimes.base import AgentRuntime
from nexus.worker.runtimes.relay import Relays
from nexus.worker.scheduler import Scheduler
from nexus.worker.secrets import SecretStore
from nexus.worker.settings import WorkerSettings
from nexus.worker.slots import Slots

CANCEL_SUBJECT = BY_TYPE["worker.cancel_run"].subject

log = logging.getLogger("nexus.worker")


def build_runtime(settings: WorkerSettings, environ: dict[str, str]) -> AgentRuntime:
    if settings.runtime == "kubernetes":
        from nexus.worker.runtimes.kubernetes import KubernetesRuntime

        return KubernetesRuntime(settings.agent_namespace, settings.runner_image)
    from nexus.worker.runtimes.local import LocalProcessRuntime

    return LocalProcessRuntime(
        Path(settings.workspaces_dir).resolve(),
        parent_env=environ,
        memory_mb=settings.run_memory_mb,
        open_files=settings.run_open_files,
        cpu_seconds=settings.run_cpu_seconds,
        zygote=settings.zygote,
        zygote_env=child_observability_env(settings),
        run_uid=settings.run_uid,
        run_gid=settings.run_gid,
        run_files=settings.run_files_dir,
    )


async def connect_bus(url: str, creds: str) -> NATS:
    """The worker's connection. Without echo: nothing the worker subscribes to needs its own messages back,
    and what it says of runs it notes in its sightings itself (sightings.py)."""
    return await connect(url, "worker", creds=creds, no_echo=True)


async def _ready(db: DbClient) -> bool:
    await ping(db)
    return LOOPS.healthy()


async def serve(settings: WorkerSettings, environ: dict[str, str]) -> None:
    stop = stop_event_on_signals()
    db = await connect_db(settings.mongodb_url, settings.mongodb_db, create_indexes=False)
    nc = await connect_bus(settings.nats_url, settings.nats_creds)
    js = nc.jetstream()
    await ensure_streams(js, settings.jetstream_replicas)
    claims = await ensure_key_value(js, LAUNCH_BUCKET, ttl_s=7 * 86400, replicas=settings.jetstream_replicas)
    workers = await ensure_key_value(js, WORKERS_BUCKET, ttl_s=86400, replicas=settings.jetstream_replicas)
    ops = await start_ops(settings, lambda: _ready(db))
    runtime = build_runtime(settings, environ)
    relays = Relays(nc) if settings.relay else None  # a forked run's publishes ride this connection
    if (open_runtime := getattr(runtime, "open", None)) is not None:
        open_runtime(relays)
    publisher = Publisher(js, "worker")
    freshness = (
        Freshness(
            margin_s=settings.launch_fresh_margin_s,
            reconnects=lambda: int(nc.stats["reconnects"]),
            connected=lambda: nc.is_connected,
        )
        if settings.launch_fresh_without_read
        else None
    )
    worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    # Dead after worker_dead_after_s of silence, or sooner where the lost-run timeout is shorter still.
    dead_after = min(settings.worker_dead_after_s, max(settings.heartbeat_timeout_s, 3 * settings.sweep_interval_s))
    membership = Membership(workers, worker_id, timeout_s=dead_after)
    launcher = Launcher(
        runtime,
        publisher,
        claims,
        SecretStore(Path(settings.secrets_dir), environ),
        Slots(settings.max_concurrent_runs, settings.max_runs_per_agent),
        nats_url=settings.nats_url,
        worker_id=worker_id,
        launch_retries=settings.launch_retries,
        heartbeat_s=settings.runner_heartbeat_s,
        pause_after_claim_s=settings.fault_pause_after_claim_s,
        membership=membership,
        run_signer=RunSigner.parse(Path(settings.nats_run_signer_file).read_text())
        if settings.nats_run_signer_file
        else None,
        runner_env=runner_env(settings),
        freshness=freshness,
    )
    recovery = Recovery(
        runtime,
        publisher,
        launcher,
        claims,
        membership,
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
        deadline_grace_s=settings.deadline_grace_s,
        retention_s=settings.run_retention_s,
        retention_batch=settings.run_retention_batch,
    )
    await recovery.sightings.start(nc)
    if relays is not None:
        relays.heard = recovery.sightings.note
    scheduler = Scheduler(publisher, grace_s=settings.schedule_grace_s, reread_s=settings.schedule_reread_s)
    intake = LaunchIntake(js, launcher, backlog=settings.launch_backlog, ack_wait_s=settings.launch_ack_wait_s)
    # Every worker hears every cancel: with the local runtime only the worker that started a run can end it,
    # and every launch is judged current by the cancels heard (freshness.py).
    await nc.subscribe(CANCEL_SUBJECT, cb=launcher.on_cancel_broadcast)
    await nc.flush()  # the server has the subscription: every cancel from now on reaches this worker
    if freshness is not None:
        freshness.listening()
    log.info("worker %s up: runtime=%s, max %d runs", worker_id, runtime.name, settings.max_concurrent_runs)
    try:
        await asyncio.gather(
            supervised("worker-launch", lambda: intake.run(stop), stop),
            consume(
                js,
                stream=CMDS_STREAM,
                durable="worker-cancel",
                subject=CANCEL_SUBJECT,
                handler=launcher.handle_cancel,
                stop=stop,
                ack_wait_s=settings.cancel_ack_wait_s,
                memory=True,  # a work queue: see nexus.events.consumer.pull_config
            ),
            every(settings.worker_beat_s, stop, membership.beat, what="liveness beat", at_start=True),
            watch_consumer_lag(js, "worker", stop),
            every(settings.sweep_interval_s, stop, recovery.sweep, what="recovery sweep", at_start=True),
            every(settings.schedule_tick_s, stop, scheduler.tick, what="schedule tick", at_start=True),
        )
    finally:
        await launcher.close()
        if (close_runtime := getattr(runtime, "close", None)) is not None:
            await close_runtime()
        await ops.stop()
        await nc.drain()
        await db.close()


# The operator's caps on every run (WorkerSettings), by the runner's own names for them.
RUN_CAPS = ("sandbox", "disk_budget_bytes", "ledger_max_changes", "approvals_max", "git_timeout_s", "log_limit")


def runner_env(settings: WorkerSettings) -> dict[str, str]:
    """What the worker adds to every run's environment, on every launch path (the launcher puts it in the
    environment each runtime hands its runner)."""
    env = child_observability_env(settings)
    for name in RUN_CAPS:
        if (value := getattr(settings, name)) is not None:
            env[f"NEXUS_{name.upper()}"] = str(value)
    if settings.fault_runner_pause_after_verdict_s:
        env["NEXUS_FAULT_PAUSE_AFTER_VERDICT_S"] = str(settings.fault_runner_pause_after_verdict_s)
    return env


def main() -> None:
    environ = dict(os.environ)
    settings = load_settings(WorkerSettings, environ)
    bootstrap("worker", settings)
    asyncio.run(serve(settings, environ))


if __name__ == "__main__":
    main()

"""worker's entry point: consume launch/cancel commands, launch runs, sweep for lost ones."""

import asyncio
import contextlib
import logging
import os
import socket
from pathlib import Path

from nats.js.api import KeyValueConfig

from nexus.db.connection import connect_db, ping
from nexus.domain.settings import load_settings
from nexus.events.bus import Publisher, connect, ensure_streams
from nexus.events.catalog import CMDS_STREAM
from nexus.events.consumer import consume
from nexus.observability.service import bootstrap, start_ops, stop_event_on_signals
from nexus.worker.launcher import LAUNCH_BUCKET, Launcher, Slots
from nexus.worker.recovery import Recovery
from nexus.worker.secrets import SecretStore
from nexus.worker.settings import WorkerSettings

log = logging.getLogger("nexus.worker")


def build_runtime(settings: WorkerSettings, environ: dict[str, str]):
    if settings.runtime == "kubernetes":
        from nexus.worker.runtimes.kubernetes import KubernetesRuntime

        return KubernetesRuntime(settings.agent_namespace, settings.runner_image)
    from nexus.worker.runtimes.local import LocalProcessRuntime

    return LocalProcessRuntime(
        Path(settings.workspaces_dir).resolve(), parent_env=environ, memory_mb=settings.run_memory_mb,
        open_files=settings.run_open_files, cpu_seconds=settings.run_cpu_seconds,
    )


async def sweep_forever(recovery: Recovery, every_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await recovery.sweep()
        except Exception:  # noqa: BLE001 — the next sweep tries again
            log.exception("recovery sweep failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


async def serve(settings: WorkerSettings, environ: dict[str, str]) -> None:
    stop = stop_event_on_signals()
    db = await connect_db(settings.mongodb_url, settings.mongodb_db)
    nc = await connect(settings.nats_url, "worker")
    js = nc.jetstream()
    await ensure_streams(js)
    kv = await js.create_key_value(KeyValueConfig(bucket=LAUNCH_BUCKET, ttl=7 * 86400, history=1))
    ops = await start_ops(settings, lambda: ping(db))
    runtime = build_runtime(settings, environ)
    publisher = Publisher(js, "worker")
    worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    launcher = Launcher(
        runtime, publisher, kv, SecretStore(Path(settings.secrets_dir), environ),
        Slots(settings.max_concurrent_runs, settings.max_runs_per_agent),
        nats_url=settings.nats_url, worker_id=worker_id, launch_retries=settings.launch_retries,
        heartbeat_s=settings.runner_heartbeat_s,
    )
    recovery = Recovery(runtime, publisher, launcher, kv, heartbeat_timeout_s=settings.heartbeat_timeout_s)
    log.info("worker %s up: runtime=%s, max %d runs", worker_id, runtime.name, settings.max_concurrent_runs)
    try:
        await asyncio.gather(
            consume(js, stream=CMDS_STREAM, durable="worker-launch", subject="nexus.cmd.worker.launch_run",
                    handler=launcher.handle_launch, stop=stop, concurrency=8, batch=8, ack_wait_s=60),
            consume(js, stream=CMDS_STREAM, durable="worker-cancel", subject="nexus.cmd.worker.cancel_run",
                    handler=launcher.handle_cancel, stop=stop),
            sweep_forever(recovery, settings.sweep_interval_s, stop),
        )
    finally:
        await launcher.close()
        await ops.stop()
        await nc.drain()
        await db.close()


def main() -> None:
    environ = dict(os.environ)
    settings = load_settings(WorkerSettings, environ)
    bootstrap("worker", settings)
    asyncio.run(serve(settings, environ))


if __name__ == "__main__":
    main()

"""Launching runs: never twice, within concurrency limits, transient failures retried with backoff."""

import asyncio
import contextlib
import logging
from collections import Counter as Tally
from dataclasses import dataclass, field

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from prometheus_client import Gauge, Histogram
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from nexus.db.documents import Run
from nexus.domain.runs import RUN_FINAL, RunStatus
from nexus.events.bus import Publisher
from nexus.events.consumer import Delivery
from nexus.events.payloads import CancelRun, LaunchRun, RuntimeChanged
from nexus.worker.runtimes.base import AgentRuntime, RunRequest, RuntimeError_
from nexus.worker.secrets import SecretStore

log = logging.getLogger("nexus.worker.launcher")
ACTIVE = Gauge("nexus_runs_active", "Runs this worker has launched and not yet seen exit")
LAUNCH_LATENCY = Histogram(
    "nexus_dispatch_latency_seconds", "From launch command to runtime started",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAUNCH_BUCKET = "nexus_launches"


@dataclass
class Slots:
    """A global and a per-agent limit on runs in flight in this worker."""

    total: int
    per_agent: int
    active: dict[str, str] = field(default_factory=dict)  # run_id -> agent_id
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def _free(self, agent_id: str) -> bool:
        return len(self.active) < self.total and Tally(self.active.values())[agent_id] < self.per_agent

    async def acquire(self, run_id: str, agent_id: str, keepalive) -> None:
        async with self.changed:
            while not self._free(agent_id):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 5)
                await keepalive()
            self.active[run_id] = agent_id
            ACTIVE.set(len(self.active))

    async def release(self, run_id: str) -> None:
        async with self.changed:
            if self.active.pop(run_id, None) is not None:
                ACTIVE.set(len(self.active))
                self.changed.notify_all()


class Launcher:
    def __init__(
        self, runtime: AgentRuntime, publisher: Publisher, kv: KeyValue, secrets: SecretStore, slots: Slots,
        *, nats_url: str, worker_id: str, launch_retries: int = 4, heartbeat_s: float = 5.0,
    ) -> None:
        self.runtime = runtime
        self.publisher = publisher
        self.kv = kv
        self.secrets = secrets
        self.slots = slots
        self.nats_url = nats_url
        self.worker_id = worker_id
        self.launch_retries = launch_retries
        self.heartbeat_s = heartbeat_s
        self.watchers: dict[str, asyncio.Task] = {}

    async def _claim(self, run_id: str, attempt: int) -> bool:
        """One launch per run attempt across restarts and replicas: an atomic create in JetStream KV."""
        try:
            await self.kv.create(f"{run_id}.{attempt}", self.worker_id.encode())
            return True
        except KeyWrongLastSequenceError:
            return False

    async def _report(self, run_id: str, attempt: int, phase: str, detail: str = "", exit_code: int | None = None) -> None:
        await self.publisher.publish(
            "run.runtime",
            RuntimeChanged(phase=phase, attempt=attempt, runtime=self.runtime.name, detail=detail, exit_code=exit_code),  # type: ignore[arg-type]
            run_id=run_id,
            correlation_id=run_id,
        )

    async def handle_launch(self, d: Delivery) -> None:
        cmd: LaunchRun = d.payload
        run = await Run.get(cmd.run_id)
        if run is None or run.attempt != cmd.attempt or RunStatus(run.status) in RUN_FINAL:
            log.info("dropping stale launch of %s attempt %d", cmd.run_id, cmd.attempt)
            return
        if not await self._claim(cmd.run_id, cmd.attempt):
            log.info("run %s attempt %d was already launched; not launching twice", cmd.run_id, cmd.attempt)
            return

        async def keepalive() -> None:
            if d.msg is not None:
                await d.msg.in_progress()

        await self.slots.acquire(cmd.run_id, cmd.config.agent_id, keepalive)
        loop = asyncio.get_running_loop()
        started = loop.time()
        env = {
            "NEXUS_NATS_URL": self.nats_url,
            "NEXUS_HEARTBEAT_S": str(self.heartbeat_s),
            **self.secrets.resolve(cmd.config.secrets),
        }
        request = RunRequest(run_id=cmd.run_id, attempt=cmd.attempt, config=cmd.config, env=env, wall_clock_s=cmd.config.limits.wall_clock_s)
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(lambda e: isinstance(e, RuntimeError_) and e.transient),
                stop=stop_after_attempt(self.launch_retries),
                wait=wait_exponential_jitter(initial=0.2, max=5),
                reraise=True,
            ):
                with attempt:
                    handle = await self.runtime.start_run(request)
        except RuntimeError_ as exc:
            await self.slots.release(cmd.run_id)
            await self._report(cmd.run_id, cmd.attempt, "launch_failed", str(exc))
            return
        LAUNCH_LATENCY.observe(loop.time() - started)
        await self._report(cmd.run_id, cmd.attempt, "launched", handle.ref)
        self.watchers[cmd.run_id] = asyncio.create_task(self._watch(cmd.run_id, cmd.attempt))

    async def _watch(self, run_id: str, attempt: int) -> None:
        try:
            wait = getattr(self.runtime, "wait", None)
            code = await wait(run_id) if wait else None
            await self._report(run_id, attempt, "exited", exit_code=code)
        finally:
            await self.slots.release(run_id)
            self.watchers.pop(run_id, None)

    async def handle_cancel(self, d: Delivery) -> None:
        cmd: CancelRun = d.payload
        await self.runtime.cancel_run(cmd.run_id)

    async def adopt(self, run_id: str, attempt: int, agent_id: str) -> None:
        """After a restart: watch a run whose runner outlived the previous worker process."""
        if run_id in self.watchers:
            return
        self.slots.active[run_id] = agent_id
        self.watchers[run_id] = asyncio.create_task(self._watch(run_id, attempt))

    async def close(self) -> None:
        for t in list(self.watchers.values()):
            t.cancel()
_ = KeyWrongLastSequenceError

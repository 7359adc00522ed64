"""Launching runs: never twice, within concurrency limits, transient failures retried with backoff."""

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from nexus.db.run_state import run_state
from nexus.domain.runs import RUN_FINAL, RunStatus
from nexus.events.bus import Publisher
from nexus.events.credentials import RunSigner
from nexus.events.consumer import UNDECODABLE, Delivery, decode_message
from nexus.events.payloads import CancelRun, LaunchRun, RuntimeChanged
from nexus.worker.freshness import Freshness
from nexus.worker.membership import Membership
from nexus.worker.sightings import Sightings
from nexus.events.permissions import RunIdentity
from nexus.observability.tracing import span, traceparent_env, tracer
from nexus.worker.metrics import EXECUTIONS, LAUNCH_CHECKS, LAUNCH_LATENCY
from nexus.worker.runtimes.base import AgentRuntime, RunHandle, RunRequest, RuntimeError_
from nexus.worker.secrets import SecretStore
from nexus.worker.slots import Slots, Ticket

log = logging.getLogger("nexus.worker.launcher")
LAUNCH_BUCKET = "nexus_launches"
TRACER = tracer("nexus.worker")


def _backoff() -> Iterator[float]:
    """Waits between asking a bus that does not answer: 0.2 s doubling to 5 s, for about two minutes."""
    wait = 0.2
    for _ in range(30):
        yield wait
        wait = min(wait * 2, 5.0)


def claim_key(run_id: str, attempt: int) -> str:
    return f"{run_id}.{attempt}"


async def is_stale(cmd: LaunchRun) -> bool:
    run = await run_state(cmd.run_id)  # two fields, not the run with its whole config
    return run is None or run.attempt != cmd.attempt or RunStatus(run.status) in RUN_FINAL


class Launcher:
    def __init__(
        self,
        runtime: AgentRuntime,
        publisher: Publisher,
        kv: KeyValue,
        secrets: SecretStore,
        slots: Slots,
        *,
        nats_url: str,
        worker_id: str,
        launch_retries: int = 4,
        heartbeat_s: float = 5.0,
        pause_after_claim_s: float = 0.0,
        membership: "Membership | None" = None,
        run_signer: RunSigner | None = None,
        runner_env: dict[str, str] | None = None,
        freshness: Freshness | None = None,
    ) -> None:
        # How runners log and where their spans go (NEXUS_LOG_FORMAT, NEXUS_OTLP_ENDPOINT).
        self.runner_env = runner_env or {}
        self.membership = membership
        self.run_signer = run_signer
        self.runtime = runtime
        self.publisher = publisher
        self.kv = kv
        self.secrets = secrets
        self.slots = slots
        self.nats_url = nats_url
        self.worker_id = worker_id
        self.launch_retries = launch_retries
        self.heartbeat_s = heartbeat_s
        self.pause_after_claim_s = pause_after_claim_s
        self.watchers: dict[str, asyncio.Task[None]] = {}
        self.launching: set[tuple[str, int]] = set()  # (run, attempt) claimed here and not started or given up yet
        self.freshness = freshness
        self.sightings = Sightings()  # the recovery sweep's too
        self._cancelling: set[asyncio.Task[None]] = set()

    async def _claim(
        self, run_id: str, attempt: int, before_takeover: Callable[[], Awaitable[bool]] | None = None
    ) -> int | None:
        """One launch per run attempt across restarts and replicas: an atomic create in JetStream KV.
        The value says who claimed it and when (recovery reads both). A claim held by a worker that
        stopped beating, for an attempt with no execution, is taken over (compare-and-set on its
        revision), so a launch the dead worker held starts in seconds, not after a timeout — unless
        `before_takeover` (the read of a launch judged fresh without one) says the launch is stale.
        Returns the claim's revision (what `_still_ours` sets from), None when it is not ours."""
        value = json.dumps({"worker": self.worker_id, "at": time.time()}).encode()
        key = claim_key(run_id, attempt)
        try:
            return int(await self.kv.create(key, value))
        except KeyWrongLastSequenceError:
            pass
        if self.membership is None:
            return None
        try:
            entry = await self.kv.get(key)
            holder = str(json.loads(entry.value or b"{}").get("worker", ""))
        except (KeyNotFoundError, ValueError, AttributeError):
            return None
        if await self.membership.alive(holder) or (await self.runtime.status(run_id)).phase in ("running", "pending"):
            return None
        if before_takeover is not None and await before_takeover():
            return None
        try:
            revision = int(await self.kv.update(key, value, last=entry.revision))
        except KeyWrongLastSequenceError:
            return None  # another worker took it over first
        log.warning("taking over the launch of %s attempt %d from %s, which stopped", run_id, attempt, holder)
        return revision

    def _surely_ours(self, claimed_at: float | None) -> bool:
        return claimed_at is not None and self.membership is not None and self.membership.surely_alive(claimed_at)

    async def _still_ours(self, run_id: str, attempt: int, revision: int) -> bool:
        """Right before the runner starts: the claim is still as we made it, and now says the start is
        under way (a compare-and-set on its revision). A worker that stood still after its claim (frozen,
        swapped out, a pause longer than the heartbeat timeout) looks dead to the others: one may have
        taken the claim over, or its sweep declared the attempt lost (it marks the claim first) and the
        run went on to its next attempt. Starting then would run a second runner beside theirs. The bus
        out of reach is waited out: the answer decides."""
        key = claim_key(run_id, attempt)
        value = json.dumps({"worker": self.worker_id, "at": time.time(), "starting": True}).encode()
        for wait in _backoff():
            try:
                await self.kv.update(key, value, last=revision)
                return True
            except KeyWrongLastSequenceError:
                return False
            except Exception as exc:  # noqa: BLE001 — the bus away: asked again until it answers
                log.warning("cannot confirm the launch claim of %s attempt %d yet (%r)", run_id, attempt, exc)
                await asyncio.sleep(wait)
        return False

    async def report(
        self, run_id: str, attempt: int, phase: str, detail: str = "", exit_code: int | None = None
    ) -> None:
        await self.publisher.publish(
            "run.runtime",
            RuntimeChanged(phase=phase, attempt=attempt, runtime=self.runtime.name, detail=detail, exit_code=exit_code),  # type: ignore[arg-type]  # callers pass the phases by name
            run_id=run_id,
            correlation_id=run_id,
        )
        self.sightings.heard(run_id, attempt, ended=phase == "exited")  # not echoed back to us (sightings.py)

    def run_credentials(self, cmd: LaunchRun) -> dict[str, str]:
        """The attempt's own NATS user: only its run's subjects (nexus.events.permissions.for_run). It goes
        to the runner with the secrets (the runtime's environment), never into a log or an event."""
        if self.run_signer is None:
            return {}
        who = RunIdentity(cmd.run_id, cmd.attempt, cmd.config.session_id, cmd.config.parent_session_id)
        return {"NEXUS_NATS_CREDS": self.run_signer.mint(who, cmd.config.limits.wall_clock_s)}

    async def launch(
        self, cmd: LaunchRun, ticket: Ticket, *, stored_at: float | None = None, deliveries: int | None = None
    ) -> None:
        """Launch one attempt holding `ticket` (a granted slot). The slot is kept until the runner exits.
        `stored_at` (when the command was stored in its stream) and `deliveries` let a launch be judged
        current without reading its run (freshness.py); without them the run is read."""
        fresh = self.freshness is not None and self.freshness.fresh(cmd.run_id, stored_at, deliveries)
        LAUNCH_CHECKS.labels("bus" if fresh else "read").inc()

        async def stale() -> bool:
            if await is_stale(cmd):
                log.info("dropping stale launch of %s attempt %d", cmd.run_id, cmd.attempt)
                return True
            return False

        try:
            if not fresh and await stale():
                self.slots.release(ticket)
                return
            revision = await self._claim(cmd.run_id, cmd.attempt, stale if fresh else None)
            # Surely alive as the claim was made (None if not): what spares the confirmation before the start.
            claimed_at = time.time() if self.membership is not None and self.membership.surely_alive() else None
            if revision is None:
                log.info("run %s attempt %d was already launched; not launching twice", cmd.run_id, cmd.attempt)
                self.slots.release(ticket)
                return
        except BaseException:
            self.slots.release(ticket)
            raise
        self.launching.add((cmd.run_id, cmd.attempt))
        try:
            await self._launch_claimed(cmd, ticket, revision, claimed_at)
        finally:
            self.launching.discard((cmd.run_id, cmd.attempt))

    async def _launch_claimed(self, cmd: LaunchRun, ticket: Ticket, revision: int, claimed_at: float | None) -> None:
        if self.pause_after_claim_s:
            await asyncio.sleep(self.pause_after_claim_s)
        if self._cancel_heard(cmd.run_id):
            log.info("run %s was cancelled while its launch was under way; not starting it", cmd.run_id)
            self.slots.release(ticket)
            return
        # Only another worker that judged this one dead may take the claim over or mark it lost: when this one
        # was surely alive at its claim and has been since, the claim is as it made it, and the confirming
        # round trip is spared (every launch).
        if not self._surely_ours(claimed_at) and not await self._still_ours(cmd.run_id, cmd.attempt, revision):
            log.warning(
                "the launch of %s attempt %d was taken from this worker while it stood still; not starting it",
                cmd.run_id,
                cmd.attempt,
            )
            EXECUTIONS.labels("superseded").inc()
            self.slots.release(ticket)
            return
        with span(
            TRACER,
            "launch run",
            attributes={
                "nexus.run_id": cmd.run_id,
                "nexus.attempt": cmd.attempt,
                "nexus.runtime": self.runtime.name,
                "nexus.agent_id": cmd.config.agent_id,
            },
        ):
            await self._start(cmd, ticket)

    async def _start(self, cmd: LaunchRun, ticket: Ticket) -> None:
        started = time.monotonic()
        env = {
            "NEXUS_NATS_URL": self.nats_url,
            "NEXUS_HEARTBEAT_S": str(self.heartbeat_s),
            **self.runner_env,
            **traceparent_env(),  # the runner's session continues this launch's trace
            **self.secrets.resolve(cmd.config.secrets),
            **self.run_credentials(cmd),
        }
        request = RunRequest(
            run_id=cmd.run_id,
            attempt=cmd.attempt,
            config=cmd.config,
            env=env,
            wall_clock_s=cmd.config.limits.wall_clock_s,
        )
        try:
            handle = await self._start_retrying(request)
        except RuntimeError_ as exc:
            self.slots.release(ticket)
            await self.report(cmd.run_id, cmd.attempt, "launch_failed", str(exc))
            return
        LAUNCH_LATENCY.observe(time.monotonic() - started)
        EXECUTIONS.labels("launched").inc()
        try:
            await self.report(cmd.run_id, cmd.attempt, "launched", handle.ref)
        except Exception:  # the runner's own "running" tells core-api; recovery covers the rest
            log.exception("could not report the launch of %s", cmd.run_id)
        # "exited" always follows "launched"; the watcher owns the slot from here.
        self.watchers[cmd.run_id] = asyncio.create_task(self._watch(cmd.run_id, cmd.attempt, ticket))
        if self._cancel_heard(cmd.run_id):  # heard while the runner was being started: it found no runner to stop
            log.info("run %s was cancelled while its runner started; stopping it", cmd.run_id)
            await self.runtime.cancel_run(cmd.run_id)

    async def _start_retrying(self, request: RunRequest) -> RunHandle:
        """The runtime's start, a transient failure retried with backoff. The first try is made outside
        tenacity: its machinery cost a launch more than the zygote's request, and nearly every start succeeds
        at once."""
        try:
            return await self.runtime.start_run(request)
        except RuntimeError_ as exc:
            if not exc.transient or self.launch_retries <= 1:
                raise
        # The waits are those of one loop from the first try: 0.2 s × 2^(n-1) after the n-th, plus up to 1 s.
        await asyncio.sleep(min(0.2 + random.uniform(0, 1), 5))
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(lambda e: isinstance(e, RuntimeError_) and e.transient),
            stop=stop_after_attempt(self.launch_retries - 1),  # the first try is spent
            wait=wait_exponential_jitter(multiplier=0.4, max=5),
            reraise=True,
        ):
            with attempt:
                handle = await self.runtime.start_run(request)
        return handle

    def _cancel_heard(self, run_id: str) -> bool:
        return self.freshness is not None and self.freshness.was_cancelled(run_id)

    async def _watch(self, run_id: str, attempt: int, ticket: Ticket) -> None:
        try:
            wait = getattr(self.runtime, "wait", None)
            code = await wait(run_id) if wait else None
            await self.report(run_id, attempt, "exited", exit_code=code)
        finally:
            self.slots.release(ticket)
            self.watchers.pop(run_id, None)

    async def handle_cancel(self, d: Delivery) -> None:
        cmd: CancelRun = d.payload
        log.info("cancel of run %s taken from the queue by worker %s", cmd.run_id, self.worker_id)
        if self.freshness is not None:
            self.freshness.heard_cancel(cmd.run_id)
        await self.runtime.cancel_run(cmd.run_id)

    async def on_cancel_broadcast(self, msg: Any) -> None:
        """Every worker hears every cancel (a plain subscription beside the durable consumer): with the
        local runtime only the worker that started a run can end it, and the durable consumer hands
        each cancel to one worker. Not hosting the run here is a no-op; so is a cancel heard twice.
        Every cancel is remembered at once (launches are judged by it); stopping a runner, which may
        take the kill grace, runs beside the subscription so the next cancel is not held behind it."""
        try:
            _, cmd = decode_message(msg)
        except UNDECODABLE as exc:
            log.warning("undecodable cancel on %s: %s", msg.subject, exc)
            return
        if self.freshness is not None:
            self.freshness.heard_cancel(cmd.run_id)
        if self.runtime.name != "local":  # a Job is stopped by whichever worker the durable consumer hands it
            return
        task = asyncio.create_task(self._cancel_broadcast(cmd.run_id))
        self._cancelling.add(task)
        task.add_done_callback(self._cancelling.discard)

    async def _cancel_broadcast(self, run_id: str) -> None:
        try:
            await self.runtime.cancel_run(run_id)
        except Exception:  # the durable consumer and the orphan sweep still cover this run
            log.exception("cancel of %s (broadcast) failed", run_id)

    def adopt(self, run_id: str, attempt: int, agent_id: str) -> None:
        """After a restart: watch a run whose runner outlived the worker that launched it."""
        if run_id in self.watchers:
            return
        log.info("adopting run %s attempt %d", run_id, attempt)
        self.watchers[run_id] = asyncio.create_task(self._watch(run_id, attempt, self.slots.hold(agent_id)))

    async def close(self) -> None:
        tasks = [*self.watchers.values(), *self._cancelling]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

"""Every run ends in a final state, whatever crashes: lost runs, deadlines, orphans, adoption."""

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from nexus.db.documents import Run
from nexus.domain.agents import Limits
from nexus.domain.json_types import JsonObject
from nexus.domain.runs import RUN_FINAL, RunStatus
from nexus.events.bus import Publisher
from nexus.events.payloads import RunStatusChanged, RuntimeChanged
from nexus.worker.launcher import Launcher, claim_key
from nexus.worker.membership import Membership
from nexus.worker.metrics import EXECUTIONS
from nexus.worker.runtimes.base import AgentRuntime

log = logging.getLogger("nexus.worker.recovery")
ACTIVE_STATES = ["launching", "running", "waiting_approval"]
PRUNE_EVERY_S = 60.0


class SweptRun(BaseModel):
    """What a sweep reads of an active run: its state and its wall-clock limit — `wall_clock_s` on the
    run, or the inline config's limits of a run stored before configs were kept apart (only those)."""

    id: str = Field(alias="_id")
    agent_id: str
    status: str
    attempt: int = 1
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    wall_clock_s: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)  # {"limits": …} only, of a run stored before
    last_heartbeat_at: datetime | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None

    class Settings:
        projection = {
            "_id": 1,
            "agent_id": 1,
            "status": 1,
            "attempt": 1,
            "attempts": 1,
            "wall_clock_s": 1,
            "config.limits": 1,
            "last_heartbeat_at": 1,
            "created_at": 1,
            "started_at": 1,
        }


DEFAULT_WALL_CLOCK_S = Limits().wall_clock_s  # an agent's when its limits do not say


def wall_clock_limit(run: SweptRun) -> int:
    """The run's wall-clock limit in seconds: on the run, or in the inline config of a run stored before
    configs were kept apart (its agent's default when neither says)."""
    if run.wall_clock_s is not None:
        return run.wall_clock_s
    limit: int = (run.config.get("limits") or {}).get("wall_clock_s", DEFAULT_WALL_CLOCK_S)
    return limit


async def active_runs(statuses: list[str]) -> list[SweptRun]:
    """The runs in `statuses`, one equality query per status (FerretDB v1 answers an equality from the
    index, `$in` by reading every run), each as a SweptRun."""
    out: list[SweptRun] = []
    for status in statuses:
        out.extend(await Run.find({"status": status}, projection_model=SweptRun).to_list())
    return out


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _current_attempt(run: "Run | SweptRun") -> JsonObject:
    return next((a for a in run.attempts if a.get("n") == run.attempt), {})


def last_sign_of_life(run: "Run | SweptRun", claimed_at: datetime | None = None) -> datetime:
    times = [
        _aware(run.last_heartbeat_at),
        _aware(_current_attempt(run).get("started_at")),
        claimed_at,
        _aware(run.started_at),
        _aware(run.created_at),
    ]
    return max(t for t in times if t is not None)


class Claim:
    def __init__(self, worker: str, at: datetime, revision: int = 0) -> None:
        self.worker = worker
        self.at = at
        self.revision = revision  # the KV entry's: a sweep that declares it lost sets from it


class Recovery:
    def __init__(
        self,
        runtime: AgentRuntime,
        publisher: Publisher,
        launcher: Launcher,
        kv: KeyValue,
        membership: Membership,
        *,
        heartbeat_timeout_s: float,
        deadline_grace_s: float = 10.0,
        retention_s: float = 0.0,
        retention_batch: int = 256,
    ) -> None:
        """`retention_s`: ended runs' files are removed from this machine this long after their end (0: kept)."""
        self.runtime = runtime
        self.publisher = publisher
        self.launcher = launcher
        self.kv = kv
        self.membership = membership
        self.timeout = heartbeat_timeout_s
        self.grace = deadline_grace_s
        self.retention = (retention_s, retention_batch)
        self._next_prune = 0.0
        self.reported: set[tuple[str, int, str]] = set()  # (run, attempt, what) this process already said
        self.sightings = launcher.sightings

    async def _once(self, run: SweptRun, what: str) -> bool:
        key = (run.id, run.attempt, what)
        if key in self.reported:
            return False
        self.reported.add(key)
        return True

    async def _lost(self, run: SweptRun, detail: str) -> None:
        if not await self._once(run, "lost"):
            return
        log.warning("run %s attempt %d lost: %s", run.id, run.attempt, detail)
        EXECUTIONS.labels("lost").inc()
        await self.publisher.publish(
            "run.runtime",
            RuntimeChanged(phase="lost", attempt=run.attempt, runtime=self.runtime.name, detail=detail),
            run_id=run.id,
            correlation_id=run.id,
        )
        self.sightings.heard(run.id, run.attempt, ended=False)  # said on the bus: heard, as a runner's word is

    async def _claim(self, run: SweptRun) -> Claim | None:
        try:
            entry = await self.kv.get(claim_key(run.id, run.attempt))
        except KeyNotFoundError:
            return None
        try:
            value = json.loads(entry.value or b"{}")
            return Claim(str(value["worker"]), datetime.fromtimestamp(float(value["at"]), UTC), entry.revision or 0)
        except (ValueError, KeyError, TypeError):  # an old-style claim: who and when unknown
            return Claim((entry.value or b"").decode(errors="replace"), datetime.now(UTC), entry.revision or 0)

    async def _fence(self, run: SweptRun, claim: Claim) -> bool:
        """The claim marked lost (a compare-and-set on the revision read), before the attempt is said lost:
        its claimer, if it only stood still and comes back, finds its claim changed and starts nothing
        (`Launcher._still_ours`); one that confirmed its start first makes this fail, and the attempt is
        not declared lost (its runner is about to be heard)."""
        value = json.dumps({"worker": claim.worker, "at": claim.at.timestamp(), "lost": True}).encode()
        try:
            await self.kv.update(claim_key(run.id, run.attempt), value, last=claim.revision)
            return True
        except KeyWrongLastSequenceError:
            return False

    async def _launching(self, run: SweptRun, claim: Claim) -> bool:
        """Whether the worker that claimed the run's launch is still launching it: this worker knows its
        own launches in flight; another worker is taken at its word while it beats (its sweep judges it)."""
        if claim.worker == self.launcher.worker_id:
            return (run.id, run.attempt) in self.launcher.launching
        return await self.membership.alive(claim.worker)

    async def _launcher_gone(self, claim: Claim | None) -> bool:
        return claim is None or not await self.membership.alive(claim.worker)

    async def sweep(self) -> None:
        now = datetime.now(UTC)
        runs = await active_runs([*ACTIVE_STATES, "queued"])
        # First, and with the database alone: a run cancelled while the bus was out of reach is stopped
        # even though its cancel command has not come (nor will while the bus is away).
        await self._orphans({r.id for r in runs}, now)
        await self.membership.beat()
        for run in runs:
            status = await self.runtime.status(run.id)
            # The launch claim is read (a KV round trip) only where it decides something: not for a run
            # this worker watches, nor one that said it ended — at 50 in flight, most of every sweep.
            if status.phase in ("running", "pending"):
                if run.id not in self.launcher.watchers and await self._launcher_gone(await self._claim(run)):
                    self.launcher.adopt(run.id, run.attempt, run.agent_id)
                await self._deadline(run, now)
                continue
            key = (run.id, run.attempt)
            if run.id in self.launcher.watchers or key in self.sightings.ended:
                continue  # it ended and said so (or our watcher is saying it); core-api has not caught up yet
            claim = await self._claim(run)
            heard = self.sightings.seen.get(key)
            if run.status == "queued":
                # Claimed but never started (the worker died in between): the attempt is lost. Not while the
                # claimer is still on it (a slow fork, a start retried, the bus away): the runner it starts
                # would run beside the next attempt.
                if (
                    claim is not None
                    and heard is None
                    and (now - claim.at).total_seconds() > self.timeout
                    and not await self._launching(run, claim)
                    and (run.id, run.attempt, "lost") not in self.reported  # marked and said once
                    and await self._fence(run, claim)
                ):
                    await self._lost(run, "claimed for launch but never started")
                continue
            signs = [
                t
                for t in (last_sign_of_life(run, claim.at if claim else None), heard, self.sightings.since)
                if t is not None
            ]
            silent = (now - max(signs)).total_seconds()
            if silent > self.timeout:
                await self._lost(run, f"no heartbeat for {silent:.0f}s and no live {self.runtime.name} execution")
        live = {r.id for r in runs}
        self.reported = {k for k in self.reported if k[0] in live}
        self.sightings.prune(live, now)
        await self._prune_files()

    async def _prune_files(self) -> None:
        """Ended runs' files off this machine (a runtime that keeps any: the local one), in batches: once a
        minute (or once per retention, when shorter), and every sweep while batches come back full."""
        prune = getattr(self.runtime, "prune", None)
        max_age_s, batch = self.retention
        if prune is None or max_age_s <= 0 or time.monotonic() < self._next_prune:
            return
        removed = await prune(max_age_s, batch)
        if removed:
            log.info("removed %d entries of runs that ended over %.0fs ago", removed, max_age_s)
        self._next_prune = time.monotonic() + (0 if removed >= batch else min(PRUNE_EVERY_S, max_age_s))

    async def _deadline(self, run: SweptRun, now: datetime) -> None:
        limit = wall_clock_limit(run)
        started = _aware(_current_attempt(run).get("started_at")) or _aware(run.started_at)
        if started is None or (now - started).total_seconds() <= limit + self.grace:
            return
        if not await self._once(run, "timed_out"):
            return
        log.warning("run %s passed its wall-clock limit of %ss; cancelling", run.id, limit)
        EXECUTIONS.labels("timed_out").inc()
        # The verdict goes out first: whatever the runner says while it is being stopped comes too late.
        await self.publisher.publish(
            "run.status",
            RunStatusChanged(status="timed_out", attempt=run.attempt, reason=f"wall-clock limit of {limit}s exceeded"),
            run_id=run.id,
            correlation_id=run.id,
        )
        self.sightings.heard(run.id, run.attempt, ended=True)
        await self.runtime.cancel_run(run.id)

    async def _orphans(self, active_ids: set[str], now: datetime) -> None:
        for run_id in await self.runtime.list_runs():
            if run_id in active_ids:
                continue
            run = await Run.get(run_id)
            ended = _aware(run.ended_at) if run else None
            # It is reporting its end and exiting on its own (a runner told to cancel reports `cancelled` first:
            # stopped at once while the bus is away, its word would be lost).
            if ended is not None and (now - ended).total_seconds() < self.grace:
                continue
            if run is None or RunStatus(run.status) in RUN_FINAL:  # queued counts as active: it may have just launched
                log.warning("cleaning up orphaned execution of %s", run_id)
                await self.runtime.cleanup(run_id)

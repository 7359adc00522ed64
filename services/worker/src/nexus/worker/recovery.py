"""Every run ends in a final state, whatever crashes: lost runs, deadlines, orphans, adoption."""

import logging
from datetime import UTC, datetime

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from nexus.db.documents import Run
from nexus.events.bus import Publisher
from nexus.events.payloads import RunStatusChanged, RuntimeChanged
from nexus.worker.launcher import Launcher
from nexus.worker.runtimes.base import AgentRuntime

log = logging.getLogger("nexus.worker.recovery")
ACTIVE_STATES = ["launching", "running", "waiting_approval"]


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def last_sign_of_life(run: Run) -> datetime:
    current = next((a for a in run.attempts if a.get("n") == run.attempt), {})
    times = [_aware(run.last_heartbeat_at), _aware(current.get("started_at")), _aware(run.started_at), _aware(run.created_at)]
    return max(t for t in times if t is not None)


class Recovery:
    def __init__(self, runtime: AgentRuntime, publisher: Publisher, launcher: Launcher, kv: KeyValue, *, heartbeat_timeout_s: float,
                 deadline_grace_s: float = 10.0) -> None:
        self.runtime = runtime
        self.publisher = publisher
        self.launcher = launcher
        self.kv = kv
        self.timeout = heartbeat_timeout_s
        self.grace = deadline_grace_s
        self.reported: set[tuple[str, int]] = set()

    async def _lost(self, run: Run, detail: str) -> None:
        key = (run.id, run.attempt)
        if key in self.reported:
            return
        self.reported.add(key)
        log.warning("run %s attempt %d lost: %s", run.id, run.attempt, detail)
        await self.publisher.publish(
            "run.runtime", RuntimeChanged(phase="lost", attempt=run.attempt, runtime=self.runtime.name, detail=detail), run_id=run.id
        )

    async def _claimed_at(self, run: Run) -> datetime | None:
        try:
            entry = await self.kv.get(f"{run.id}.{run.attempt}")
        except KeyNotFoundError:
            return None
        return datetime.now(UTC) if entry is None else _aware(getattr(entry, "created", None)) or datetime.now(UTC)

    async def sweep(self) -> None:
        now = datetime.now(UTC)
        runs = await Run.find({"status": {"$in": ACTIVE_STATES + ["queued"]}}).to_list()
        live_ids = set()
        for run in runs:
            status = await self.runtime.status(run.id)
            alive = status.phase in ("running", "pending")
            if alive:
                live_ids.add(run.id)
                if run.id not in self.launcher.watchers and run.status != "queued":
                    await self.launcher.adopt(run.id, run.attempt, run.agent_id)
                await self._deadline(run, now)
                continue
            if run.status == "queued":
                # Claimed but never launched (the worker died in between): the attempt is lost.
                claimed = await self._claimed_at(run)
                if claimed is not None and (now - claimed).total_seconds() > self.timeout:
                    await self._lost(run, "claimed for launch but never started")
                continue
            silent = (now - last_sign_of_life(run)).total_seconds()
            if silent > self.timeout:
                await self._lost(run, f"no heartbeat for {silent:.0f}s and no live {self.runtime.name} execution")
        await self._orphans({r.id for r in runs})

    async def _deadline(self, run: Run, now: datetime) -> None:
        limit = (run.config.get("limits") or {}).get("wall_clock_s", 1800)
        started = _aware(run.started_at)
        if started is None or (now - started).total_seconds() <= limit + self.grace:
            return
        if (run.id, -run.attempt) in self.reported:
            return
        self.reported.add((run.id, -run.attempt))
        log.warning("run %s passed its wall-clock limit of %ss; cancelling", run.id, limit)
        await self.runtime.cancel_run(run.id)
        await self.publisher.publish(
            "run.status",
            RunStatusChanged(status="timed_out", attempt=run.attempt, reason=f"wall-clock limit of {limit}s exceeded"),
            run_id=run.id,
        )

    async def _orphans(self, active_ids: set[str]) -> None:
        for run_id in await self.runtime.list_runs():
            if run_id in active_ids:
                continue
            run = await Run.get(run_id)
            if run is None or run.status not in ACTIVE_STATES:
                log.warning("cleaning up orphaned execution of %s", run_id)
                await self.runtime.cleanup(run_id)

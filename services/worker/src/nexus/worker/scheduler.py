"""The clock of schedules: find due occurrences and fire them as `core.fire_schedule` commands.

The worker only reads schedules; core-api decides what an occurrence does (overlap policy) and
records it. Firing is idempotent: the occurrence id (schedule id + occurrence time) is the message
id, and core-api derives the created task's or goal's id from it."""

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from nexus.db.documents import Schedule
from nexus.db.schedules import occurrence_active
from nexus.events.bus import Publisher
from nexus.events.payloads import FireSchedule
from nexus.observability.tracing import span, tracer
from nexus.worker.metrics import SCHEDULE_FIRES

log = logging.getLogger("nexus.worker.scheduler")
REFIRE_AFTER_S = 30.0  # a fired occurrence core-api has not recorded yet is fired again after this
TRACER = tracer("nexus.worker")


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def occurrence_id(schedule_id: str, at: datetime) -> str:
    return f"{schedule_id}@{_aware(at).astimezone(UTC):%Y%m%dT%H%M%SZ}"


def due_occurrences(
    cron: str, tz: str, after: datetime, now: datetime, *, missed: str, catch_up_limit: int, grace_s: float
) -> list[tuple[datetime, bool]]:
    """Occurrences in (after, now], oldest first, as (time in UTC, late). One no older than `grace_s`
    is on time; older ones were missed: dropped under `skip`, the newest `catch_up_limit` kept under
    `catch_up`. Walks back from now, so a long downtime costs no more than the cap."""
    zone = ZoneInfo(tz)
    it = croniter(cron, _aware(now).astimezone(zone))
    after = _aware(after)
    found: list[datetime] = []
    keep_missed = catch_up_limit if missed == "catch_up" else 0
    while True:
        at = it.get_prev(datetime).astimezone(UTC)
        if at <= after:
            break
        late = (now - at).total_seconds() > grace_s
        if late and sum(1 for t in found if (now - t).total_seconds() > grace_s) >= keep_missed:
            break
        found.append(at)
    return [(t, (now - t).total_seconds() > grace_s) for t in reversed(found)]


def next_occurrence(s: Schedule) -> datetime:
    """The first occurrence of `s` after the latest one core-api handled (its anchor before any), in UTC;
    a cron expression that does not parse counts as due now (the full tick reports it)."""
    after = _aware(s.last_occurrence_at) if s.last_occurrence_at else _aware(s.anchor_at)
    after = max(after, _aware(s.anchor_at))
    try:
        at: datetime = croniter(s.cron, after.astimezone(ZoneInfo(s.timezone))).get_next(datetime)
        return at.astimezone(UTC)
    except Exception:  # noqa: BLE001 — croniter's and zoneinfo's errors alike: read it every tick
        return after


class Scheduler:
    """`tick()` every second fires what is due. With `reread_s`, a tick reads the schedules only when one
    is due by what it read last (read again before firing: a schedule disabled or deleted meanwhile does
    not fire), when one holds occurrences back (their release depends on other documents), or when
    `reread_s` has passed since the last read (a schedule created or changed is noticed within it). A
    clock at rest then costs no database round trip a second. `reread_s=0`: every tick reads."""

    def __init__(
        self,
        publisher: Publisher,
        *,
        grace_s: float = 60.0,
        reread_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.publisher = publisher
        self.grace_s = grace_s
        self.reread_s = reread_s
        self.clock = clock
        self.fired: dict[str, float] = {}  # message id -> when this process last fired it
        self._read_at: float | None = None
        self._next_due: datetime | None = None  # the earliest next occurrence of what was read last
        self._holding = False  # what was read last holds occurrences back

    def _nothing_to_do(self, now: datetime) -> bool:
        if self.reread_s <= 0 or self._read_at is None or self._holding:
            return False
        if self.clock() - self._read_at >= self.reread_s:
            return False
        return self._next_due is None or now < self._next_due

    async def tick(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        if self._nothing_to_do(now):
            return
        schedules = await Schedule.find({"enabled": True, "deleted": False}).to_list()
        self._read_at = self.clock()
        self._holding = any(s.pending for s in schedules)
        self._next_due = min((next_occurrence(s) for s in schedules), default=None)
        for s in schedules:
            try:
                await self._schedule(s, now)
            except Exception:  # one broken schedule must not stop the others
                log.exception("schedule %s (%s) could not fire", s.id, s.name)
        cutoff = time.monotonic() - 10 * REFIRE_AFTER_S
        self.fired = {k: v for k, v in self.fired.items() if v > cutoff}

    async def _schedule(self, s: Schedule, now: datetime) -> None:
        after = max(_aware(s.anchor_at), _aware(s.last_occurrence_at) if s.last_occurrence_at else _aware(s.anchor_at))
        due = due_occurrences(
            s.cron, s.timezone, after, now, missed=s.missed, catch_up_limit=s.catch_up_limit, grace_s=self.grace_s
        )
        for at, late in due:
            await self._fire(s, at, late=late, msg_id=occurrence_id(s.id, at), reason="late" if late else "on_time")
        # An occurrence held back by the overlap policy goes once the one before it has ended.
        if s.pending and not await occurrence_active(s.kind, s.active_item_id):
            at = _aware(min(s.pending))
            await self._fire(s, at, late=False, msg_id=occurrence_id(s.id, at) + ".released", reason="released")

    async def _fire(self, s: Schedule, at: datetime, *, late: bool, msg_id: str, reason: str) -> None:
        last = self.fired.get(msg_id)
        if last is not None and time.monotonic() - last < REFIRE_AFTER_S:
            return
        self.fired[msg_id] = time.monotonic()
        cmd = FireSchedule(
            schedule_id=s.id,
            occurrence_at=at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            occurrence_id=occurrence_id(s.id, at),
            late=late,
        )
        # The root of the trace of every run this occurrence starts.
        with span(
            TRACER,
            "fire schedule",
            attributes={
                "nexus.schedule_id": s.id,
                "nexus.occurrence_id": cmd.occurrence_id,
                "nexus.fire_reason": reason,
            },
        ):
            await self.publisher.publish("core.fire_schedule", cmd, msg_id=msg_id, correlation_id=s.id)
        SCHEDULE_FIRES.labels(reason).inc()
        log.info("fired schedule %s occurrence %s (%s)", s.name, cmd.occurrence_at, reason)

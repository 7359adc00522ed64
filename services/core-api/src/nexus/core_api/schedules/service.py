"""Schedules: validation and storage, and what an occurrence does when the worker's clock fires it.

Firing is idempotent: the task or goal an occurrence creates has an id derived from the schedule id
and the occurrence time, so a redelivered or re-fired command finds it and changes nothing."""

import hashlib
import logging
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
from typing import cast

from croniter import croniter
from pymongo.errors import DuplicateKeyError
from ulid import ULID

from nexus.core_api.audit.service import record
from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError
from nexus.core_api.named import get_named, named_id
from nexus.core_api.schedules.schemas import ScheduleOut, ScheduleSpec
from nexus.core_api.schemas import iso
from nexus.core_api.workflow import engine
from nexus.db.documents import Agent, Goal, Repository, Schedule, Task, no_run_ended, now
from nexus.db.schedules import occurrence_active
from nexus.db.writes import update_document
from nexus.domain.ids import new_id
from nexus.domain.json_types import JsonObject
from nexus.domain.tasks import TaskStatus
from nexus.events.payloads import FireSchedule

log = logging.getLogger("nexus.core_api.schedules")


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


# ---------------------------------------------------------------- validation and storage
def check_timing(cron: str, timezone: str) -> None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise DomainError(422, f"unknown time zone {timezone!r}", field="timezone") from exc
    if not croniter.is_valid(cron):
        raise DomainError(422, f"invalid cron expression {cron!r}", field="cron")


async def _ref(doc_cls: type[Agent | Repository], ref: str, kind: str, field: str) -> str:
    return await named_id(doc_cls, ref, kind=kind, field=field)


async def _template(spec: ScheduleSpec) -> tuple[str, JsonObject]:
    if (spec.task is None) == (spec.goal is None):
        raise DomainError(422, "give exactly one of `task` or `goal`", field="task")
    if spec.task is not None:
        t = spec.task
        return "task", {
            "title": t.title,
            "description": t.description,
            "priority": t.priority,
            "assignee_agent_id": await _ref(Agent, t.assignee, "agent", "task.assignee"),
            "repository_id": await _ref(Repository, t.repository, "repository", "task.repository")
            if t.repository
            else None,
        }
    g = spec.goal
    assert g is not None
    return "goal", {
        "title": g.title,
        "description": g.description,
        "meta_agent_id": await _ref(Agent, g.meta_agent, "agent", "goal.meta_agent") if g.meta_agent else None,
        "repository_id": await _ref(Repository, g.repository, "repository", "goal.repository")
        if g.repository
        else None,
    }


def next_fire_at(s: Schedule, at: datetime | None = None) -> datetime | None:
    if not s.enabled or s.deleted:
        return None
    start = max(at or datetime.now(UTC), _aware(s.anchor_at))
    # croniter is untyped: get_next(datetime) returns a datetime
    return cast(datetime, croniter(s.cron, start.astimezone(ZoneInfo(s.timezone))).get_next(datetime).astimezone(UTC))


def to_out(s: Schedule) -> ScheduleOut:
    return ScheduleOut(
        id=s.id,
        name=s.name,
        cron=s.cron,
        timezone=s.timezone,
        kind=s.kind,
        task=s.template if s.kind == "task" else None,
        goal=s.template if s.kind == "goal" else None,
        overlap=s.overlap,
        missed=s.missed,
        catch_up_limit=s.catch_up_limit,
        max_queued=s.max_queued,
        enabled=s.enabled,
        next_fire_at=iso(next_fire_at(s)),
        last_occurrence_at=iso(s.last_occurrence_at),
        active_item_id=s.active_item_id,
        pending=[iso(p) or "" for p in s.pending],
        fired_count=s.fired_count,
        skipped_count=s.skipped_count,
        created_at=iso(s.created_at) or "",
        updated_at=iso(s.updated_at) or "",
    )


def _fields(spec: ScheduleSpec, kind: str, template: JsonObject) -> JsonObject:
    return {
        "cron": spec.cron,
        "timezone": spec.timezone,
        "kind": kind,
        "template": template,
        "overlap": spec.overlap,
        "missed": spec.missed,
        "catch_up_limit": spec.catch_up_limit,
        "max_queued": spec.max_queued,
        "enabled": spec.enabled,
    }


async def create(spec: ScheduleSpec, *, actor: str) -> Schedule:
    check_timing(spec.cron, spec.timezone)
    kind, template = await _template(spec)
    doc = Schedule(id=new_id("sch"), name=spec.name, created_by=actor, **_fields(spec, kind, template))
    try:
        await doc.insert()
    except DuplicateKeyError as exc:
        raise DomainError(409, f"a schedule named {spec.name!r} exists", field="name") from exc
    return doc


async def get(id_or_name: str) -> Schedule:
    return await get_named(Schedule, id_or_name, "schedule")


async def _cas(s: Schedule, changes: JsonObject) -> bool:
    """Write only if nobody wrote since `s` was read (the firing path and the API share the document)."""
    res = await update_document(
        Schedule, s.id, {"$set": {**changes, "updated_at": now()}, "$inc": {"version": 1}}, {"version": s.version}
    )
    return res.modified_count == 1


async def update(id_or_name: str, spec: ScheduleSpec) -> tuple[Schedule, bool]:
    check_timing(spec.cron, spec.timezone)
    kind, template = await _template(spec)
    for _ in range(8):
        doc = await get(id_or_name)
        if spec.name != doc.name:
            raise DomainError(422, "a schedule's name cannot change", field="name")
        fields = _fields(spec, kind, template)
        if all(getattr(doc, k) == v for k, v in fields.items()):
            return doc, False
        timing = (doc.cron, doc.timezone, doc.enabled) != (spec.cron, spec.timezone, spec.enabled)
        if timing:  # a new clock starts now: no catch-up of occurrences the old one would have had
            fields["anchor_at"] = now()
        if await _cas(doc, fields):
            return await get(doc.id), True
    raise DomainError(409, "the schedule kept changing; try again", field="name")


async def delete(id_or_name: str) -> Schedule:
    doc = await get(id_or_name)
    await update_document(
        Schedule,
        doc.id,
        {
            "$set": {"deleted": True, "enabled": False, "name": f"{doc.name}~deleted~{doc.id}", "updated_at": now()},
            "$inc": {"version": 1},
        },
    )
    return doc


# ---------------------------------------------------------------- firing
def item_id(kind: str, schedule_id: str, at: datetime) -> str:
    """The id of what one occurrence creates: a ULID whose time is the occurrence's and whose
    randomness comes from the schedule id — the same occurrence always yields the same id."""
    ms = int(_aware(at).timestamp() * 1000)
    raw = ms.to_bytes(6, "big") + hashlib.sha256(schedule_id.encode()).digest()[:10]
    return f"{kind}_{str(ULID.from_bytes(raw)).lower()}"


def _held_back(s: Schedule, at: datetime) -> JsonObject:
    """The changes when the previous occurrence is still running, by overlap policy."""
    pending = [_aware(p) for p in s.pending]
    if s.overlap == "enqueue" and len(pending) < s.max_queued:
        return {"pending": sorted(set(pending) | {at})}
    if s.overlap == "coalesce":
        return {"pending": [max([*pending, at])]}
    return {"skipped_count": s.skipped_count + 1}


async def fire(ctx: Context, cmd: FireSchedule) -> str | None:
    """Handle one occurrence: start it, hold it back, or skip it. Returns the created item's id."""
    at = _aware(datetime.fromisoformat(cmd.occurrence_at.replace("Z", "+00:00")))
    for _ in range(8):
        s = await Schedule.get(cmd.schedule_id)
        if s is None or s.deleted or not s.enabled:
            return None
        item = item_id(s.kind, s.id, at)
        last = max(_aware(s.last_occurrence_at), at) if s.last_occurrence_at else at
        if await _created(ctx, s.kind, item):
            return item  # fired before: nothing changes twice
        pending = [_aware(p) for p in s.pending]
        busy = s.active_item_id not in (None, item) and await occurrence_active(s.kind, s.active_item_id)
        if busy:
            if at in pending:
                return None  # a release that came too early: it stays queued
            if await _cas(s, {"last_occurrence_at": last, **_held_back(s, at)}):
                log.info(
                    "schedule %s occurrence %s held back (%s): %s still running",
                    s.name,
                    cmd.occurrence_at,
                    s.overlap,
                    s.active_item_id,
                )
                return None
            continue
        keep = [p for p in pending if p > at] if s.overlap == "coalesce" else [p for p in pending if p != at]
        if await _cas(
            s, {"active_item_id": item, "pending": keep, "last_occurrence_at": last, "fired_count": s.fired_count + 1}
        ):
            await _create_item(ctx, s, item, at)
            return item
    log.warning("schedule %s kept changing while firing %s", cmd.schedule_id, cmd.occurrence_at)
    return None


async def _created(ctx: Context, kind: str, item: str) -> bool:
    if kind == "goal":
        goal = await Goal.get(item)
        if goal is not None:
            await engine.ensure_planned(ctx, goal)  # stored, then the process died before planning it
        return goal is not None
    task = await Task.get(item)
    if task is not None and task.status == TaskStatus.READY.value and not task.current_run_id:
        await engine.dispatch(ctx, task)  # created, then the process died before dispatching it
    return task is not None


async def _create_item(ctx: Context, s: Schedule, item: str, at: datetime) -> None:
    t = s.template
    created_by = f"schedule:{s.id}"
    try:
        if s.kind == "goal":
            await engine.create_goal(
                ctx,
                t["title"],
                t.get("description", ""),
                created_by=created_by,
                meta_agent_id=t.get("meta_agent_id"),
                repository_id=t.get("repository_id"),
                goal_id=item,
            )
        else:
            task = Task(
                id=item,
                title=t["title"],
                description=t.get("description", ""),
                status=TaskStatus.READY.value,
                assignee_agent_id=t["assignee_agent_id"],
                repository_id=t.get("repository_id"),
                priority=t.get("priority", 0),
                created_by=created_by,
                run_brief=no_run_ended(),
            )
            await task.insert()
            await engine.announce_created(ctx, task)
            await engine.dispatch(ctx, task)
    except DuplicateKeyError:
        return
    await record(None, "schedule.fire", f"schedules/{s.id}", after_id=item)
    log.info("schedule %s fired occurrence %s as %s", s.name, at.isoformat(), item)

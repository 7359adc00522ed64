from typing import Annotated, Literal

import msgspec

from nexus.core_api.schemas import Body, Name, Out, ShortText, Text
from nexus.domain.json_types import JsonObject

Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
Cron = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, description="5-field cron (6 with seconds), e.g. `0 9 * * 1-5`")
]
TimeZone = Annotated[str, msgspec.Meta(min_length=1, max_length=64, description="IANA time zone, e.g. `Europe/Paris`")]


class TaskTemplate(Body, kw_only=True):
    title: ShortText
    description: Text = ""
    assignee: Ref  # agent id or name
    repository: Ref | None = None
    priority: Annotated[int, msgspec.Meta(ge=-100, le=100)] = 0


class GoalTemplate(Body, kw_only=True):
    title: ShortText
    description: Text = ""
    meta_agent: Ref | None = None  # the agent that plans the goal into tasks
    repository: Ref | None = None


class ScheduleSpec(Body, kw_only=True):
    name: Name
    cron: Cron
    timezone: TimeZone = "UTC"
    task: TaskTemplate | None = None
    goal: GoalTemplate | None = None
    # When the previous occurrence is still running: skip this one, queue it, or fold all waiting ones into one.
    overlap: Literal["skip", "enqueue", "coalesce"] = "skip"
    # Occurrences that passed while nothing was firing (downtime): drop them, or run the latest few.
    missed: Literal["skip", "catch_up"] = "skip"
    catch_up_limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    max_queued: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    enabled: bool = True


class ScheduleOut(Out, kw_only=True):
    id: str
    name: str
    cron: str
    timezone: str
    kind: str
    task: JsonObject | None
    goal: JsonObject | None
    overlap: str
    missed: str
    catch_up_limit: int
    max_queued: int
    enabled: bool
    next_fire_at: str | None
    last_occurrence_at: str | None
    active_item_id: str | None
    pending: list[str]
    fired_count: int
    skipped_count: int
    created_at: str
    updated_at: str

"""A goal's feed: the system's event stream narrowed to one goal (every goal.*, task.* and budget.*
event that names it), with the stream sequence as the event id so a client resumes where it left off."""

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import msgspec
from litestar.response import ServerSentEventMessage

from nexus.core_api.context import Context
from nexus.core_api.runs.stream import jetstream_events, not_an_event
from nexus.events.catalog import EVENTS_STREAM

TYPES = {"goal.*", "task.*", "budget.*"}


class _Envelope(msgspec.Struct):
    type: str = ""
    data: Any = None  # what was published: an object for every event of ours, anything for a poison one


def _about(data: str, goal_id: str) -> tuple[bool, bool]:
    """(names the goal, is its report — the last word). An event kept by the stream whose data is not
    what ours are (a poison message that still decodes as an envelope) names no goal: skipped, as every
    reader skips it, never the end of the stream."""
    try:
        env = msgspec.json.decode(data, type=_Envelope)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False, False
    mine = isinstance(env.data, dict) and env.data.get("goal_id") == goal_id
    return mine, mine and env.type == "goal.reported"


async def goal_events(ctx: Context, goal_id: str, *, after_seq: int) -> AsyncIterator[ServerSentEventMessage]:
    follow = jetstream_events(
        ctx.js,
        "nexus.evt.>",
        after_seq=after_seq,
        keepalive_s=ctx.settings.sse_keepalive_s,
        types=TYPES,
        stream=EVENTS_STREAM,
    )
    events = cast("AsyncGenerator[ServerSentEventMessage, None]", follow)  # an async generator: closed below
    try:
        async for msg in events:
            if not_an_event(msg):
                yield msg
                continue
            mine, last = _about(str(msg.data), goal_id)
            if mine:
                yield msg
            if last:
                return
    finally:
        await events.aclose()

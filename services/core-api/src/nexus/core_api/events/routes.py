"""The system-wide event stream: every domain fact on NEXUS_EVENTS, replayable by sequence."""

import re
from typing import Annotated

from litestar import get
from litestar.params import Parameter
from litestar.response import ServerSentEvent

from nexus.core_api.held import held_stream
from nexus.core_api.auth.guards import READ
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError
from nexus.core_api.runs.stream import jetstream_events, parse_last_event_id
from nexus.events.catalog import EVENTS_STREAM, MESSAGES

EVENT_TYPES = frozenset(m.type for m in MESSAGES if m.stream == EVENTS_STREAM)
_TYPE = re.compile(r"^[a-z_]+(\.[a-z_]+)*(\.\*)?$|^\*$")


def parse_types(value: str | None) -> set[str] | None:
    """`task.*,run.succeeded` → the set jetstream_events filters on; a name matching no event is an error."""
    if not value:
        return None
    types = {t.strip() for t in value.split(",") if t.strip()}
    if "*" in types:
        return None
    for t in types:
        known = any(e.startswith(t[:-1]) for e in EVENT_TYPES) if t.endswith("*") else t in EVENT_TYPES
        if not _TYPE.match(t) or not known:
            raise DomainError(422, f"unknown event type {t!r}; known: {', '.join(sorted(EVENT_TYPES))}", field="types")
    return types


@get("/v1/events", guards=[READ], tags=["events"])
async def system_events(
    request: ApiRequest,
    types: Annotated[
        str | None, Parameter(max_length=2000, description="comma-separated event types; `task.*` matches a prefix")
    ] = None,
) -> ServerSentEvent:
    """Every domain event (task.*, goal.*, run.*, approval.*): replays after `Last-Event-ID` (the JetStream
    sequence) or from the start of retention, then follows, with keep-alive comments."""
    wanted = parse_types(types)
    ctx: Context = request.app.state.ctx
    after = parse_last_event_id(request.headers.get("last-event-id"))
    return held_stream(
        request.app.state,
        request.user,
        request.auth,
        jetstream_events(
            ctx.js,
            "nexus.evt.>",
            after_seq=after,
            keepalive_s=ctx.settings.sse_keepalive_s,
            types=wanted,
            stream=EVENTS_STREAM,
        ),
    )

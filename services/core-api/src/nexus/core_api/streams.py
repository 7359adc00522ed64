"""Event streams (server-sent events) are held by the API key that opened them. A stream is checked
against its key at every message it sends (keep-alives included), so a revoked key's open streams end
within a keep-alive plus the key cache's TTL instead of following the system's events for ever; and one
key holds at most `sse_streams_per_key` streams at once in a process (each costs a JetStream consumer or
a run-feed listener), more are refused with 429 and Retry-After rather than slowing every other client."""

import weakref
from collections.abc import AsyncIterator

from litestar.datastructures import State
from litestar.response import ServerSentEvent, ServerSentEventMessage

from nexus.core_api.auth.keys import KeyCache, Principal
from nexus.core_api.errors import DomainError
from nexus.core_api.runs.stream import stream_error

RETRY_AFTER_S = 5


class _Hold:
    """One open stream, as its key's slots see it."""


class StreamSlots:
    """The streams each key holds open. A stream counts from its response until its body ends or the
    response is dropped unread (weak references: a client gone before the body started leaks nothing)."""

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._open: dict[str, weakref.WeakSet[_Hold]] = {}

    def held(self, key_id: str) -> int:
        return len(self._open.get(key_id, ()))

    def take(self, key_id: str, stream: _Hold) -> None:
        held = self._open.setdefault(key_id, weakref.WeakSet())
        if len(held) >= self.per_key:
            raise DomainError(
                429,
                f"this API key already holds {self.per_key} open event streams; close one first",
                field="Authorization",
                retry_after_s=RETRY_AFTER_S,
            )
        held.add(stream)

    def give_back(self, key_id: str, stream: _Hold) -> None:
        held = self._open.get(key_id)
        if held is not None:
            held.discard(stream)
            if not held:
                del self._open[key_id]


async def _while_valid(
    raw_key: str, cache: KeyCache, messages: AsyncIterator[ServerSentEventMessage]
) -> AsyncIterator[ServerSentEventMessage]:
    try:
        async for m in messages:
            if await cache.lookup(raw_key) is None:  # cached: a dict read per message
                yield stream_error("the API key was revoked")
                return
            yield m
    finally:
        await messages.aclose()  # type: ignore[attr-defined]  # the routes' streams are async generators


def held_stream(
    state: State, principal: Principal, raw_key: str, messages: AsyncIterator[ServerSentEventMessage]
) -> ServerSentEvent:
    """The response for a stream opened by `principal` with `raw_key`: counted against its key's slots,
    ended when the key stops being valid."""
    slots: StreamSlots = state.stream_slots
    hold = _Hold()
    slots.take(principal.key_id, hold)
    return ServerSentEvent(_counted(slots, principal.key_id, hold, _while_valid(raw_key, state.key_cache, messages)))


async def _counted(
    slots: StreamSlots, key_id: str, hold: _Hold, messages: AsyncIterator[ServerSentEventMessage]
) -> AsyncIterator[ServerSentEventMessage]:
    try:
        async for m in messages:
            yield m
    finally:
        slots.give_back(key_id, hold)
        await messages.aclose()  # type: ignore[attr-defined]

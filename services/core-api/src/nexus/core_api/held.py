"""Requests a client holds open — event streams (server-sent events) and `?wait_s=` waits — are held by
the API key that sent them. A stream is checked against its key at every message it sends (keep-alives
included), so a revoked key's open streams end within a keep-alive plus the key cache's TTL instead of
following the system's events for ever. One key holds at most `sse_streams_per_key` streams and
`waits_per_key` waits at once in a process (a stream costs a JetStream consumer or a run-feed listener,
each costs a connection); one more is refused with 429 and Retry-After rather than slowing every other
client. A wait whose key is revoked meanwhile answers 401."""

import contextlib
import weakref
from collections.abc import AsyncIterator, Iterator

from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException
from litestar.response import ServerSentEvent, ServerSentEventMessage

from nexus.core_api.auth.keys import KeyCache, Principal
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.errors import DomainError
from nexus.core_api.runs.stream import stream_error

RETRY_AFTER_S = 5


class _Hold:
    """One open stream, as its key's slots see it."""


class KeySlots:
    """What each key holds open. A stream counts from its response until its body ends or the response
    is dropped unread (weak references: a client gone before the body started leaks nothing)."""

    def __init__(self, per_key: int, what: str) -> None:
        self.per_key = per_key
        self.what = what
        self._open: dict[str, weakref.WeakSet[_Hold]] = {}

    def held(self, key_id: str) -> int:
        return len(self._open.get(key_id, ()))

    def take(self, key_id: str, stream: _Hold) -> None:
        held = self._open.setdefault(key_id, weakref.WeakSet())
        if len(held) >= self.per_key:
            raise DomainError(
                429,
                f"this API key already holds {self.per_key} open {self.what}; ask again when one has ended",
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

    @contextlib.contextmanager
    def holding(self, key_id: str) -> Iterator[None]:
        hold = _Hold()
        self.take(key_id, hold)
        try:
            yield
        finally:
            self.give_back(key_id, hold)


@contextlib.asynccontextmanager
async def waiting(request: ApiRequest, wait_s: float) -> AsyncIterator[None]:
    """Held for a request that waits (`wait_s` > 0): refused when its key holds its share of waits, and
    answered 401 when its key was revoked meanwhile — what the wait found is for a key that still holds."""
    if not wait_s:
        yield
        return
    slots: KeySlots = request.app.state.wait_slots
    with slots.holding(request.user.key_id):
        yield
    cache: KeyCache = request.app.state.key_cache
    if await cache.lookup(request.auth) is None:
        raise NotAuthorizedException("the API key was revoked while the request waited")


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
    slots: KeySlots = state.stream_slots
    hold = _Hold()
    slots.take(principal.key_id, hold)
    return ServerSentEvent(_counted(slots, principal.key_id, hold, _while_valid(raw_key, state.key_cache, messages)))


async def _counted(
    slots: KeySlots, key_id: str, hold: _Hold, messages: AsyncIterator[ServerSentEventMessage]
) -> AsyncIterator[ServerSentEventMessage]:
    try:
        async for m in messages:
            yield m
    finally:
        slots.give_back(key_id, hold)
        await messages.aclose()  # type: ignore[attr-defined]

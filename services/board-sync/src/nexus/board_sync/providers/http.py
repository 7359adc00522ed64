"""HTTP calls to an external board: rate-limited per credential, retried with backoff (tenacity)
honouring Retry-After / X-RateLimit-Reset, and counted by provider and outcome."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from nexus.board_sync.metrics import PROVIDER_CALLS
from nexus.board_sync.providers.base import AuthFailed, NotFound, ProviderError, RateLimited, Unavailable


class RateLimiter:
    """At most `per_minute` calls per credential in any 60 s window, spread evenly (one every
    60/per_minute s), so a burst queues here instead of meeting the provider's 429."""

    def __init__(self, per_minute: float) -> None:
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self.next_at = 0.0
        self.lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            wait = self.next_at - now
            self.next_at = max(now, self.next_at) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)

    def hold_off(self, seconds: float) -> None:
        """The provider said to wait: no call on this credential before then."""
        self.next_at = max(self.next_at, time.monotonic() + seconds)


_LIMITERS: dict[str, RateLimiter] = {}


def limiter_for(credential_key: str, per_minute: float) -> RateLimiter:
    """One limiter per credential in this process, however many providers share it."""
    lim = _LIMITERS.get(credential_key)
    if lim is None:
        lim = _LIMITERS[credential_key] = RateLimiter(per_minute)
    return lim


def retry_after(resp: httpx.Response, *, reset: bool = True) -> float | None:
    """Seconds to wait from Retry-After, or (for a 429) from X-RateLimit-Reset (epoch seconds or a delta)."""
    for name in ("retry-after", "x-ratelimit-reset") if reset else ("retry-after",):
        raw = resp.headers.get(name)
        if not raw:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if value > 1e9:  # an epoch timestamp
            value -= time.time()
        return max(0.0, min(value, 120.0))
    return None


def _wait(fallback: Callable[[RetryCallState], float]) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Unavailable) and exc.retry_after_s is not None:
            return exc.retry_after_s
        return fallback(state)

    return wait


T = TypeVar("T")


class HttpBoard:
    """The transport every HTTP provider shares."""

    name = "http"

    def __init__(
        self, client: httpx.AsyncClient, limiter: RateLimiter, *, attempts: int = 5, max_backoff_s: float = 10.0
    ) -> None:
        self.client = client
        self.limiter = limiter
        self.attempts = attempts
        self.max_backoff_s = max_backoff_s

    async def call(self, method: str, path: str, *, once: bool = False, **kw: Any) -> Any:
        """`once`: a call that must not be carried out twice (a create). Only a 429 (refused before
        anything was done) is retried here; after a 5xx, a timeout or a lost answer the caller looks
        for what the call may have made before trying again."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RateLimited if once else Unavailable),
            wait=_wait(wait_exponential_jitter(multiplier=0.2, max=self.max_backoff_s)),
            stop=stop_after_attempt(self.attempts),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(method, path, **kw)

    async def made_once(self, send: Callable[[], Awaitable[T]], made: Callable[[], Awaitable[T | None]]) -> T:
        """A write that must happen once (a comment, a link, a transition), whose call is `once`: after a
        failure that may hide a write made (a lost answer, a 5xx, a cut connection), `made` looks for what
        it would have made, and only if there is none is it sent again."""
        for attempt in range(1, self.attempts + 1):
            try:
                return await send()
            except Unavailable:
                if attempt == self.attempts:
                    raise
                if (found := await made()) is not None:
                    return found
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _once(self, method: str, path: str, **kw: Any) -> Any:
        await self.limiter.acquire()
        try:
            resp = await self.client.request(method, path, **kw)
        except httpx.TransportError as exc:
            PROVIDER_CALLS.labels(self.name, "unavailable").inc()
            raise Unavailable(f"{self.name}: {exc!r}") from exc
        status = resp.status_code
        if status == 429:
            PROVIDER_CALLS.labels(self.name, "rate_limited").inc()
            wait = retry_after(resp)
            self.limiter.hold_off(wait if wait is not None else 1.0)
            raise RateLimited(f"{self.name}: rate limited on {method} {path}", wait)
        if status >= 500:
            PROVIDER_CALLS.labels(self.name, "unavailable").inc()
            raise Unavailable(f"{self.name}: {status} on {method} {path}", retry_after(resp, reset=False))
        if status in (401, 403):
            PROVIDER_CALLS.labels(self.name, "auth_failed").inc()
            raise AuthFailed(f"{self.name}: credential refused ({status}) on {method} {path}")
        if status == 404:
            PROVIDER_CALLS.labels(self.name, "not_found").inc()
            raise NotFound(f"{self.name}: {method} {path} not found")
        if status >= 400:
            PROVIDER_CALLS.labels(self.name, "rejected").inc()
            raise ProviderError(f"{self.name}: {status} on {method} {path}: {resp.text[:300]}")
        try:
            body = resp.json() if resp.content else None
        except ValueError as exc:  # a proxy's error page, a cut-off answer: the provider is not answering
            PROVIDER_CALLS.labels(self.name, "malformed").inc()
            raise Unavailable(f"{self.name}: {status} on {method} {path} with a body that is not JSON") from exc
        PROVIDER_CALLS.labels(self.name, "ok").inc()
        return body

    async def aclose(self) -> None:
        await self.client.aclose()

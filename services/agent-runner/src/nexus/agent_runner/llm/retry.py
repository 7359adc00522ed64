"""Retrying model calls: 429, 5xx, timeouts and dropped connections are tried again with
exponential backoff and jitter, a bounded number of times; a server's Retry-After wins
over the backoff. Everything else (400, 401, 404, …) fails at once."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TypeVar

import tenacity

from nexus.agent_runner.llm.base import LLMError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 5  # including the first
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    jitter_s: float = 1.0
    # A longer Retry-After is cut to this, so one reply cannot stall a run for hours.
    max_retry_after_s: float = 60.0
    # Injected by tests to see the waits without waiting.
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)


async def call_with_retry(fn: Callable[[], Awaitable[T]], policy: RetryPolicy, *, what: str) -> T:
    # initial, 2×initial, 4×initial… up to max_backoff_s, plus up to jitter_s of random spread.
    backoff = tenacity.wait_exponential(
        multiplier=policy.initial_backoff_s, max=policy.max_backoff_s
    ) + tenacity.wait_random(0, policy.jitter_s)

    def wait(state: tenacity.RetryCallState) -> float:
        err = state.outcome.exception() if state.outcome else None
        if isinstance(err, LLMError) and err.retry_after is not None:
            return min(max(err.retry_after, 0.0), policy.max_retry_after_s)
        return backoff(state)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s failed (attempt %d of %d), retrying in %.2fs: %s",
            what,
            state.attempt_number,
            policy.max_attempts,
            state.upcoming_sleep,
            err,
        )

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(max(1, policy.max_attempts)),
        wait=wait,
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, LLMError) and e.retryable),
        sleep=policy.sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    attempts = 0

    async def counted() -> T:
        nonlocal attempts
        attempts += 1
        return await fn()

    try:
        return await retrying(counted)
    except LLMError as e:
        if e.retryable and attempts > 1:
            raise LLMError(
                f"{e} (gave up after {attempts} attempts)", retryable=True, status=e.status, detail=e.detail
            ) from None
        raise


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` (OpenAI) or `Retry-After` (seconds or an HTTP date)."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, IndexError):
        return None

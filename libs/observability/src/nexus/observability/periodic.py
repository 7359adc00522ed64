"""Work a service repeats on a period (sweeps, beats, ticks, reconciliations): one loop for all."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("nexus.periodic")


async def every(
    seconds: float,
    stop: asyncio.Event,
    fn: Callable[[], Awaitable[object]],
    *,
    what: str = "",
    at_start: bool = False,
) -> None:
    """Call `fn` every `seconds` until `stop` is set: first after one period, or at once with
    `at_start`. A round that fails is logged and the next one runs anyway; `seconds <= 0` is off."""
    if seconds <= 0:
        return
    what = what or getattr(fn, "__name__", repr(fn))
    wait = not at_start
    while not stop.is_set():
        if wait:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
            if stop.is_set():
                return
        wait = True
        try:
            await fn()
        except Exception:  # one failed round must not stop the next
            log.exception("periodic %s failed", what)

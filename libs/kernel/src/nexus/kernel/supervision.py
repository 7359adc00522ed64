"""Restart policies and what the kernel does when an agent fails.

A failure is a handler (or `on_start`) raising, or an agent reporting that the resource
behind it died (a bridged child exiting). Handle timeouts are not failures: the message
is dropped, reported, and the agent goes on with the next one.

- `never`: the agent leaves the kernel; queued messages are dropped and their askers told.
- `on_failure`: the agent keeps its mailbox (senders may still queue up to capacity), waits
  `backoff * 2**recent` seconds (at most `max_backoff`), then restarts — a fresh instance
  from its factory if it was spawned from one, else the same instance — and drains on.
  More than `max_restarts` restarts within `window` seconds and it leaves as with `never`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Literal

import msgspec

from nexus.kernel.agent import start_hook, stop_hook
from nexus.kernel.errors import AgentFailed
from nexus.kernel.mailbox import PAUSED

if TYPE_CHECKING:
    from nexus.kernel.drain import Drainer
    from nexus.kernel.mailbox import Mailbox
    from nexus.kernel.message import Message

log = logging.getLogger("nexus.kernel")


class RestartPolicy(msgspec.Struct, frozen=True, kw_only=True):
    mode: Literal["never", "on_failure"] = "never"
    backoff: float = 0.1
    max_backoff: float = 5.0
    max_restarts: int = 5
    window: float = 60.0

    @classmethod
    def never(cls) -> RestartPolicy:
        return NEVER

    @classmethod
    def on_failure(
        cls, *, backoff: float = 0.1, max_backoff: float = 5.0, max_restarts: int = 5, window: float = 60.0
    ) -> RestartPolicy:
        return cls(
            mode="on_failure", backoff=backoff, max_backoff=max_backoff, max_restarts=max_restarts, window=window
        )

    def delay(self, recent_restarts: int) -> float:
        return min(self.backoff * (2.0**recent_restarts), self.max_backoff)


NEVER = RestartPolicy()


class Supervisor:
    """Applies an agent's restart policy when it fails; works on the drainer's mailboxes."""

    def __init__(self, drainer: Drainer) -> None:
        self._drainer = drainer

    def failed(self, mb: Mailbox, message: Message | None, exc: BaseException) -> None:
        """Apply `mb`'s restart policy. The caller's drain task (if any) must return right after."""
        drainer = self._drainer
        mb.failures += 1
        error = AgentFailed(mb.id, f"{type(exc).__name__}: {exc}", message_id=message.id if message else None)
        error.__cause__ = exc
        drainer.routes.report(error)
        if message is not None:
            drainer.routes.fail_ask(message.id, error)
        policy = mb.policy
        if policy.mode == "never" or drainer.routes.closing():
            drainer.retire(mb, error)
            return
        loop = drainer.loop
        now = loop.time()
        times = mb.restart_times
        if times is None:
            times = mb.restart_times = deque()
        while times and now - times[0] > policy.window:
            times.popleft()
        if len(times) >= policy.max_restarts:
            log.error("agent %s failed %d times within %.0fs; giving up", mb.id, len(times) + 1, policy.window)
            drainer.retire(mb, error)
            return
        delay = policy.delay(len(times))
        times.append(now)
        mb.task = PAUSED
        log.warning("agent %s failed (%s); restarting in %.3fs", mb.id, error.detail, delay)
        mb.restart_handle = loop.call_later(delay, self._restart, mb)

    def _restart(self, mb: Mailbox) -> None:
        mb.restart_handle = None
        if mb.task is not PAUSED:
            return  # stopped while waiting
        drainer = self._drainer
        if mb.factory is not None:
            old = mb.agent
            try:
                new = mb.factory()
                if new.id != mb.id:
                    raise ValueError(f"factory made an agent with id {new.id!r}, expected {mb.id!r}")
            except Exception as exc:  # noqa: BLE001 — a factory that fails is a failed restart, supervised
                mb.task = None
                self.failed(mb, None, exc)
                return
            mb.agent = new
            if (hook := stop_hook(old)) is not None:
                drainer.routes.background(hook(), f"on_stop of replaced {mb.id}")
        mb.restarts += 1
        mb.needs_start = start_hook(mb.agent) is not None
        mb.task = None
        log.info("agent %s restarted (%d)", mb.id, mb.restarts)
        if mb.queue or mb.needs_start:
            drainer.schedule(mb)

    @staticmethod
    def cancel_restart(mb: Mailbox) -> None:
        handle: asyncio.TimerHandle | None = mb.restart_handle
        if handle is not None:
            handle.cancel()
            mb.restart_handle = None

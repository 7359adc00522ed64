"""Everything the runner says goes out as run events on nexus.run.<run_id>.<kind>.

Publishes are pipelined: an event is sent at once and its JetStream ack awaited in the background,
so a run's events cost one round trip per status, not one per event. A status (the events core-api
applies in order: running, waiting, the verdict) is a barrier: it is sent only after every earlier
event is acknowledged as stored, and awaited before anything after it is sent. So nothing is lost
unacknowledged (a run's last word is a status, and every runner path flushes before it disconnects),
every event keeps its envelope id as JetStream's dedupe id, and statuses keep their place among all
events. Between two statuses, events go out in the order they were made; only a publish retried
through a NATS failover may land after one sent later (core-api stores those by id, in any order).
A session change (an entry of the ledger) is awaited until it and all before it are stored, before
the tool's result goes back to the model. Heartbeats go out on their own."""

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from nats.js import JetStreamContext

from nexus.agent_runner.hypervisor.secrets import printable
from nexus.domain.sessions import SessionChange, SessionStatus
from nexus.events.bus import Publisher
from nexus.events.catalog import change_kind
from nexus.events.payloads import (
    CommandOutput,
    FileDiff,
    Heartbeat,
    LLMCalled,
    RunLog,
    RunStatusChanged,
    SessionChanged,
    SessionOpened,
    ToolCalled,
)

if TYPE_CHECKING:
    from nexus.kernel import Kernel

log = logging.getLogger("nexus.agent_runner")
MAX_PENDING = 64  # events whose acks may be outstanding at once; one more waits for all of them


def shown_name(name: Any, mask: Callable[[str], str]) -> str:
    """A tool name as events and the model's history show it: the model's output like its text, so masked
    (a name may hold a secret's value), printable, cut, and a string whatever the model or CLI sent."""
    text = name if isinstance(name, str) else f"<{type(name).__name__}>"
    return printable(mask(text))[:200]


class RunReporter:
    def __init__(
        self, js: JetStreamContext, run_id: str, attempt: int, *, masker: Callable[[str], str] = lambda s: s
    ) -> None:
        self.publisher = Publisher(js, "agent-runner")
        self.run_id = run_id
        self.attempt = attempt
        self.step = 0
        self.mask = masker
        self._heartbeat: asyncio.Task[None] | None = None
        self._beating = False
        self._pending: list[asyncio.Task[None]] = []  # publishes sent whose acks are awaited in the background
        # the session's agent kernel, once it has one: its mailboxes ride on the heartbeat
        self.kernel: Kernel | None = None

    async def _publish(self, type_: str, data: msgspec.Struct) -> None:
        # The publisher rides out a NATS restart or failover (retried with the same message id).
        await self.publisher.publish(type_, data, run_id=self.run_id, correlation_id=self.run_id)

    async def _send(self, type_: str, data: msgspec.Struct) -> None:
        """Sent as soon as the runner next waits, ack awaited in the background (by the next status
        or `flush`). The publishes start in the order they were made and each reaches the
        connection's buffer before its first real wait, so they go out in that order — and together,
        in one write, when several were made in a row. A publish that failed is raised at the next
        event, or at the next status."""
        self._raise_failed()
        self._pending.append(asyncio.create_task(self._publish(type_, data)))
        if len(self._pending) >= MAX_PENDING:
            await self.flush()

    def _raise_failed(self) -> None:
        done = [task for task in self._pending if task.done()]
        self._pending = [task for task in self._pending if not task.done()]
        failures = [task.exception() for task in done if not task.cancelled()]  # each one retrieved
        failed = next((exc for exc in failures if exc is not None), None)
        if failed is not None:
            raise failed

    async def flush(self) -> None:
        """Wait until every event sent so far is stored; the first failure is raised."""
        while self._pending:
            pending, self._pending = self._pending, []
            results = await asyncio.gather(*pending, return_exceptions=True)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed

    async def status(self, status: str, **fields: Any) -> None:
        if "reason" in fields:
            fields["reason"] = self.mask(fields["reason"])
        if "summary" in fields:
            fields["summary"] = self.mask(fields["summary"])
        await self.flush()  # a status comes after everything said before it is stored
        await self._publish("run.status", RunStatusChanged(status=status, attempt=self.attempt, **fields))  # type: ignore[arg-type]  # callers pass RunPhase values

    async def log(self, message: str, level: str = "info") -> None:
        await self._send("run.log", RunLog(message=self.mask(message), level=level))  # type: ignore[arg-type]  # a RunLog level

    async def session(self, report: SessionOpened) -> None:
        await self._send("run.session", report)

    def session_report(
        self,
        session_id: str,
        project_path: str,
        parent: str | None,
        backend: str,
        status: SessionStatus = "active",
        sandbox: str = "",
    ) -> SessionOpened:
        return SessionOpened(
            session_id=session_id,
            project_path=project_path,
            parent_session_id=parent,
            backend=backend,
            status=status,
            attempt=self.attempt,
            sandbox=sandbox,
        )

    def change_recorder(self, session_id: str, parent: str | None) -> Callable[[SessionChange], Awaitable[None]]:
        async def record(change: SessionChange) -> None:
            kind = change_kind(str(change.__struct_config__.tag))
            await self._send(  # the ledger's entries: each stored before the tool's result is used
                f"run.{kind}",
                SessionChanged(session_id=session_id, change=change, parent_session_id=parent, attempt=self.attempt),
            )
            await self.flush()

        return record

    async def content(self, shown: FileDiff | CommandOutput) -> None:
        """What a change looked like (the hypervisor masked and capped it), beside the change's own event."""
        kind = "run.file_diff" if isinstance(shown, FileDiff) else "run.command_output"
        await self._send(kind, msgspec.structs.replace(shown, attempt=self.attempt))

    async def llm(self, **fields: Any) -> None:
        if "text" in fields:
            fields["text"] = self.mask(fields["text"])[:4000]
        if "tool_calls" in fields:
            fields["tool_calls"] = [shown_name(name, self.mask) for name in fields["tool_calls"]]
        await self._send("run.llm", LLMCalled(**fields))

    async def tool(self, tool: Any, ok: bool, error: str = "") -> None:
        shown = shown_name(tool, self.mask)
        await self._send("run.tool", ToolCalled(step=self.step, tool=shown, ok=ok, error=self.mask(error)[:2000]))

    def start_heartbeat(self, every_s: float) -> None:
        async def beat() -> None:
            # The first beat after one interval, like every other: "running" said the run is alive, and a
            # run that ends sooner needs none (each beat is a stored event and a write of the run's
            # liveness in core-api; silence is judged against the run's start as much as its last beat).
            me = asyncio.current_task()
            await asyncio.sleep(every_s)
            while self._beating:
                with contextlib.suppress(Exception):
                    await self._publish(
                        "run.heartbeat",
                        Heartbeat(attempt=self.attempt, step=self.step, pid=os.getpid(), **self._mailboxes()),
                    )
                if me is not None and me.cancelling():
                    # Python 3.11's wait_for (inside the NATS client) loses a cancel that lands as its
                    # reply arrives: the beat would go on for ever and the run never end.
                    raise asyncio.CancelledError
                await asyncio.sleep(every_s)

        self._beating = True
        self._heartbeat = asyncio.create_task(beat())

    def _mailboxes(self) -> dict[str, int]:
        if self.kernel is None:
            return {}
        stats = self.kernel.stats(depths=False)
        return {"mailbox_depth": stats.max_depth, "mailbox_dropped": stats.dropped}

    async def stop_heartbeat(self) -> None:
        self._beating = False
        if self._heartbeat:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat

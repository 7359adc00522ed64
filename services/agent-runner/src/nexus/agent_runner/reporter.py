"""Everything the runner says goes out as run events on nexus.run.<run_id>.<kind>."""

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING

import msgspec
from nats.js import JetStreamContext

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


class RunReporter:
    def __init__(self, js: JetStreamContext, run_id: str, attempt: int, *, masker=lambda s: s) -> None:
        self.publisher = Publisher(js, "agent-runner")
        self.run_id = run_id
        self.attempt = attempt
        self.step = 0
        self.mask = masker
        self._heartbeat: asyncio.Task | None = None
        # the session's agent kernel, once it has one: its mailboxes ride on the heartbeat
        self.kernel: Kernel | None = None

    async def _send(self, type_: str, data) -> None:
        # The publisher rides out a NATS restart or failover (retried with the same message id).
        await self.publisher.publish(type_, data, run_id=self.run_id, correlation_id=self.run_id)

    async def status(self, status: str, **fields) -> None:
        if "reason" in fields:
            fields["reason"] = self.mask(fields["reason"])
        if "summary" in fields:
            fields["summary"] = self.mask(fields["summary"])
        await self._send("run.status", RunStatusChanged(status=status, attempt=self.attempt, **fields))  # type: ignore[arg-type]  # callers pass RunPhase values

    async def log(self, message: str, level: str = "info") -> None:
        await self._send("run.log", RunLog(message=self.mask(message), level=level))  # type: ignore[arg-type]  # a RunLog level

    async def session(
        self,
        session_id: str,
        project_path: str,
        parent: str | None,
        backend: str,
        status: SessionStatus = "active",
    ) -> None:
        await self._send(
            "run.session",
            SessionOpened(
                session_id=session_id,
                project_path=project_path,
                parent_session_id=parent,
                backend=backend,
                status=status,
                attempt=self.attempt,
            ),
        )

    def change_recorder(self, session_id: str, parent: str | None):
        async def record(change: SessionChange) -> None:
            kind = change_kind(str(change.__struct_config__.tag))
            await self._send(
                f"run.{kind}",
                SessionChanged(session_id=session_id, change=change, parent_session_id=parent, attempt=self.attempt),
            )

        return record

    async def content(self, shown: FileDiff | CommandOutput) -> None:
        """What a change looked like (the hypervisor masked and capped it), beside the change's own event."""
        kind = "run.file_diff" if isinstance(shown, FileDiff) else "run.command_output"
        await self._send(kind, msgspec.structs.replace(shown, attempt=self.attempt))

    async def llm(self, **fields) -> None:
        if "text" in fields:
            fields["text"] = self.mask(fields["text"])[:4000]
        await self._send("run.llm", LLMCalled(**fields))

    async def tool(self, tool: str, ok: bool, error: str = "") -> None:
        await self._send("run.tool", ToolCalled(step=self.step, tool=tool, ok=ok, error=self.mask(error)[:2000]))

    def start_heartbeat(self, every_s: float) -> None:
        async def beat() -> None:
            while True:
                with contextlib.suppress(Exception):
                    await self._send(
                        "run.heartbeat",
                        Heartbeat(attempt=self.attempt, step=self.step, pid=os.getpid(), **self._mailboxes()),
                    )
                await asyncio.sleep(every_s)

        self._heartbeat = asyncio.create_task(beat())

    def _mailboxes(self) -> dict[str, int]:
        if self.kernel is None:
            return {}
        stats = self.kernel.stats(depths=False)
        return {"mailbox_depth": stats.max_depth, "mailbox_dropped": stats.dropped}

    async def stop_heartbeat(self) -> None:
        if self._heartbeat:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat

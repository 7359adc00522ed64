"""The child process behind a bridge agent: its pipes, its outbox, its lines.

Everything here is callback driven (an asyncio SubprocessProtocol), so a child costs no
reader task: stdout bytes are split into lines as they arrive, stderr lines go to the log,
and the child's exit is seen the moment the event loop learns of it (pipe EOF / SIGCHLD),
with no polling. The outbox (lines waiting for the child's stdin) is bounded: past
`capacity` lines, `put` waits, which backs up into the agent's mailbox and its senders.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

log = logging.getLogger("nexus.kernel.bridge")

MAX_LINE = 16 * 1024 * 1024


class ChildPipes(asyncio.SubprocessProtocol):
    def __init__(
        self,
        on_line: Callable[[bytes], None],
        on_overlong: Callable[[int], None],
        on_exit: Callable[[int | None], None],
        label: str,
        capacity: int,
    ) -> None:
        self._on_line = on_line
        self._on_overlong = on_overlong
        self._on_exit = on_exit
        self.label = label
        self.capacity = capacity
        self.transport: asyncio.SubprocessTransport | None = None
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._skipping = False
        self._outbox: deque[bytes] = deque()
        self._space: list[asyncio.Future[None]] = []
        self._flush_scheduled = False
        self._writing_paused = False
        self._loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int | None] = self._loop.create_future()

    # ---- outbox -------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._outbox)

    def offer(self, line: bytes) -> bool:
        """Queue `line` for the child if the outbox has room (the fast path of `put`)."""
        if len(self._outbox) >= self.capacity:
            return False
        self._outbox.append(line)
        if not self._flush_scheduled and not self._writing_paused:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return True

    async def put(self, line: bytes) -> None:
        while len(self._outbox) >= self.capacity:
            if self.exited.done():
                raise ConnectionResetError(f"{self.label}: child exited")
            fut = self._loop.create_future()
            self._space.append(fut)
            await fut
        self._outbox.append(line)
        if not self._flush_scheduled and not self._writing_paused:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._writing_paused or not self._outbox or self.transport is None:
            return
        stdin = self.transport.get_pipe_transport(0)
        if not isinstance(stdin, asyncio.WriteTransport) or stdin.is_closing():
            return
        stdin.write(b"".join(self._outbox))
        self._outbox.clear()
        space, self._space = self._space, []
        for fut in space:
            if not fut.done():
                fut.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._flush()

    def close_stdin(self) -> None:
        self._flush()
        if self.transport is not None and (stdin := self.transport.get_pipe_transport(0)) is not None:
            stdin.close()

    # ---- reading ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # asyncio hands a subprocess protocol its SubprocessTransport

    def _stdout_pipe(self) -> asyncio.ReadTransport | None:
        out = self.transport.get_pipe_transport(1) if self.transport is not None else None
        return out if isinstance(out, asyncio.ReadTransport) else None

    def pause_reading(self) -> None:
        if (out := self._stdout_pipe()) is not None:
            out.pause_reading()

    def resume_reading(self) -> None:
        if (out := self._stdout_pipe()) is not None:
            out.resume_reading()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self._stdout_data(data)
        else:
            self._stderr += data
            *lines, rest = self._stderr.split(b"\n")
            self._stderr = bytearray(rest[-MAX_LINE:])
            for line in lines:
                log.info("[%s] %s", self.label, line[:2000].decode(errors="replace"))

    def _stdout_data(self, data: bytes) -> None:
        if self._stdout:
            data = bytes(self._stdout) + data
            self._stdout.clear()
        lines = data.split(b"\n")
        rest = lines.pop()
        if self._skipping and lines:  # the tail of an over-long line
            self._skipping = False
            del lines[0]
        on_line = self._on_line
        for line in lines:
            on_line(line)
        if len(rest) > MAX_LINE:
            self._on_overlong(len(rest))
            self._skipping = True
        elif not self._skipping:
            self._stdout += rest

    def process_exited(self) -> None:
        assert self.transport is not None
        code = self.transport.get_returncode()
        for fut in self._space:
            if not fut.done():
                fut.set_exception(ConnectionResetError(f"{self.label}: child exited"))
        self._space.clear()
        if not self.exited.done():
            self.exited.set_result(code)
        self._on_exit(code)

"""A kernel agent whose handler is a child process in any language (NDJSON over stdio).

`handle()` writes the message to the child and returns at once (pipelined); the child's
`response` lines are routed like any handler's result (an ask is resolved by reply_to).
A line that is not protocol is reported as BridgeProtocolError and skipped. A child that
exits is reported at once (AgentFailed, cause BridgeExited) and the agent's restart policy
applies: with `on_failure`, a fresh child is started after the backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec

from nexus.kernel.bridge.child import ChildPipes
from nexus.kernel.bridge.protocol import (
    SHUTDOWN,
    ErrorLine,
    LogLine,
    MessageLine,
    Register,
    RegisterPayload,
    ResponseLine,
    decode_child_line,
    encode_delivery,
)
from nexus.kernel.errors import (
    AgentFailed,
    BridgeError,
    BridgeProtocolError,
    MailboxClosed,
)
from nexus.kernel.supervision import NEVER, RestartPolicy

if TYPE_CHECKING:
    from nexus.kernel.kernel import Kernel
    from nexus.kernel.message import Message

log = logging.getLogger("nexus.kernel.bridge")

AGENT_ID_ENV = "NEXUS_AGENT_ID"  # tells the child which id to register, when the kernel chose one


class BridgeExited(Exception):
    """The child process exited while the agent was running."""


class BridgeAgent:
    def __init__(
        self,
        kernel: Kernel,
        command: Sequence[str],
        *,
        id: str | None = None,
        name: str | None = None,
        outbox_capacity: int = 1024,
        register_timeout: float = 10.0,
        stop_grace: float = 2.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        own_group: bool = False,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        self.kernel = kernel
        self.command = list(command)
        self.id = id or ""
        self.name = name or (os.path.basename(self.command[0]) if self.command else "bridge")
        self.outbox_capacity = outbox_capacity
        self.register_timeout = register_timeout
        self.stop_grace = stop_grace
        self.env = env
        self.cwd = cwd
        # own_group: the child leads a process group of its own, and stopping it signals the whole
        # group, so whatever it started (a coding CLI's shells, builds, servers) goes with it.
        self.own_group = own_group
        # Run in the child before it executes the command (a sandbox's rlimits, cgroups, Landlock ruleset).
        self.preexec = preexec
        self.malformed = 0
        self.pipes: ChildPipes | None = None
        self._registered: asyncio.Future[RegisterPayload] | None = None
        self._inflight: set[str] = set()  # delivered asks still waiting for the child's reply
        self._backlog: deque[Message] | None = None  # lines waiting for a full mailbox
        self._stopping = False

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._registered = loop.create_future()
        wanted = self.id
        env = dict(os.environ if self.env is None else self.env)
        if wanted:
            env[AGENT_ID_ENV] = wanted
        label = self.id or self.name
        pipes = self.pipes = ChildPipes(self._on_line, self._on_overlong, self._on_exit, label, self.outbox_capacity)
        try:
            await loop.subprocess_exec(
                lambda: pipes,
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=self.cwd,
                start_new_session=self.own_group,
                preexec_fn=self.preexec,
            )
        except OSError as exc:
            raise BridgeError(self.id or None, f"cannot start {self.command!r}: {exc}") from exc
        try:
            reg = await asyncio.wait_for(asyncio.shield(self._registered), self.register_timeout)
        except TimeoutError:
            self._registered.cancel()  # nobody waits for it any more
            await self.on_stop()
            raise BridgeError(self.id or None, f"no register line within {self.register_timeout}s") from None
        except BridgeError:  # it exited first
            await self.on_stop()
            raise
        if wanted and reg.id != wanted:
            await self.on_stop()
            raise BridgeError(wanted, f"child registered as {reg.id!r}")
        self.id = reg.id
        self.name = reg.name or self.name
        self.pipes.label = self.id

    async def on_start(self, kernel: Kernel) -> None:
        if self.pipes is None:  # a restart: the factory made a fresh, unstarted agent
            await self.start()

    async def on_stop(self) -> None:
        self._stopping = True
        pipes = self.pipes
        if pipes is None or pipes.transport is None:
            return
        transport = pipes.transport
        if not pipes.exited.done():
            try:
                await asyncio.wait_for(pipes.put(SHUTDOWN), self.stop_grace)
            except (TimeoutError, ConnectionResetError):
                pass
            pipes.close_stdin()
            for action in (None, lambda: self._signal(signal.SIGTERM), lambda: self._signal(signal.SIGKILL)):
                if action is not None and not pipes.exited.done():
                    action()
                try:
                    await asyncio.wait_for(asyncio.shield(pipes.exited), self.stop_grace)
                    break
                except TimeoutError:
                    continue
        if self.own_group:
            self._signal(signal.SIGKILL)  # what the child left running in its group
        transport.close()
        self._fail_inflight(MailboxClosed(self.id, "bridge stopped"))

    def _signal(self, sig: int) -> None:
        transport = self.pipes.transport if self.pipes else None
        pid = transport.get_pid() if transport is not None else None
        if transport is None or pid is None:
            return
        try:
            if self.own_group:
                os.killpg(pid, sig)
            else:
                transport.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass  # gone already

    # ---- kernel -> child ----------------------------------------------------------------

    async def handle(self, message: Message) -> None:
        pipes = self.pipes
        if pipes is None or pipes.exited.done():
            raise BridgeExited(f"{self.id}: child is not running")
        if self.kernel.awaits_reply(message.id):
            self._inflight.add(message.id)
        line = encode_delivery(message)
        if not pipes.offer(line):
            await pipes.put(line)

    @property
    def outbox_depth(self) -> int:
        return self.pipes.depth if self.pipes else 0

    # ---- child -> kernel ----------------------------------------------------------------

    def _on_line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            item = decode_child_line(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._malformed(f"{exc}; line: {line[:200]!r}")
            return
        if isinstance(item, ResponseLine | MessageLine):
            message = item.payload
            if message.reply_to is not None:
                self._inflight.discard(message.reply_to)
            self._route(message)
        elif isinstance(item, Register):
            if self._registered is not None and not self._registered.done():
                self._registered.set_result(item.payload)
                self.id = self.id or item.payload.id  # name reports about lines that follow at once
            else:
                self._malformed("register sent twice")
        elif isinstance(item, ErrorLine):
            error = AgentFailed(self.id, f"child handler failed: {item.payload.error}", item.payload.message_id)
            if item.payload.message_id is not None:
                self._inflight.discard(item.payload.message_id)
                self.kernel.fail_ask(item.payload.message_id, error)
            self.kernel.report(error)
        elif isinstance(item, LogLine):
            level = logging.getLevelName(item.payload.level.upper())
            log.log(level if isinstance(level, int) else logging.INFO, "[%s] %s", self.id, item.payload.message)

    def _on_overlong(self, size: int) -> None:
        self._malformed(f"line longer than {size} bytes")

    def _malformed(self, detail: str) -> None:
        self.malformed += 1
        self.kernel.report(BridgeProtocolError(self.id or None, detail))

    def _route(self, message: Message) -> None:
        if self._backlog is not None:
            self._backlog.append(message)
        elif not self.kernel.deliver_nowait(message):
            # The target is full: keep order by queueing what follows, and stop reading the
            # child's stdout until the backlog is delivered (or dropped after send timeouts).
            self._backlog = deque([message])
            assert self.pipes is not None
            self.pipes.pause_reading()
            self.kernel.background(self._drain_backlog(), f"bridge {self.id} backlog")

    async def _drain_backlog(self) -> None:
        backlog = self._backlog
        assert backlog is not None
        try:
            while backlog:
                await self.kernel.deliver(backlog.popleft())
        finally:
            self._backlog = None
            if self.pipes is not None:
                self.pipes.resume_reading()

    def _on_exit(self, code: int | None) -> None:
        exc = BridgeExited(f"child {self.command[0]} exited with code {code}")
        if self._registered is not None and not self._registered.done():
            self._registered.set_exception(BridgeError(self.id or None, str(exc)))
            return
        self._fail_inflight(AgentFailed(self.id, str(exc)))
        if not self._stopping and self.id in self.kernel and self.kernel.agent(self.id) is self:
            self.kernel.report_failure(self.id, exc)

    def _fail_inflight(self, error: BaseException) -> None:
        for message_id in self._inflight:
            self.kernel.fail_ask(message_id, error)
        self._inflight.clear()


async def spawn_bridge(
    kernel: Kernel,
    command: Sequence[str],
    *,
    id: str | None = None,
    restart: RestartPolicy = NEVER,
    mailbox_capacity: int | None = None,
    remote: bool = True,
    **options: object,
) -> str:
    """Start `command`, wait for its register line, and spawn it as a kernel agent.
    On restart (with `restart=RestartPolicy.on_failure(...)`) a fresh child is started.
    `remote=False` keeps it off NATS (reachable from this kernel's agents only)."""
    first = BridgeAgent(kernel, command, id=id, **options)  # type: ignore[arg-type]  # BridgeAgent's own keywords, passed through
    await first.start()
    agent_id = first.id
    made = [first]

    def factory() -> BridgeAgent:
        return made.pop() if made else BridgeAgent(kernel, command, id=agent_id, **options)  # type: ignore[arg-type]  # as above

    try:
        return kernel.spawn(factory, restart=restart, mailbox_capacity=mailbox_capacity, remote=remote)
    except Exception:
        await first.on_stop()
        raise

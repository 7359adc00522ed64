"""The run's way onto the bus: its own NATS connection, or — for a run forked from the worker's zygote —
the worker's relay for its publishes, and its own connection made only when it first needs more.

A relayed publish is the publish the run would have made (the same subject, the same envelope id as
Nats-Msg-Id), handed to the worker over a socket pair (nexus.events.relay); the worker publishes it on
its own connection and answers with JetStream's ack. Anything else (an approval's or children's
consumer, the agent kernel) connects for real with the run's own credential, as a cold runner does.

The relay breaking (the worker died or restarted, or did not answer within a publish's wait) is no
fault of the run: from then on the run publishes on its own connection, and every publish the relay
had not acknowledged is published again there with its own message id, so JetStream keeps each once
whether or not the worker had published it."""

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError

from nexus.events import relay as frames
from nexus.events.bus import PUBLISH_RETRY_S


class RelayBroken(Exception):
    """The relay is gone: publish on the run's own connection."""


class _RelayEnd(asyncio.Protocol):
    """The run's end of the relay: one frame per publish, its answer matched by sequence number."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.frames = frames.Frames(1 << 20)
        self.waiting: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self.seq = 0
        self.broken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a unix socket's transport

    def data_received(self, data: bytes) -> None:
        try:
            for body in self.frames.feed(data):
                seq, outcome = frames.REPLY.unpack_from(body)
                fut = self.waiting.pop(seq, None)
                if fut is not None and not fut.done():
                    fut.set_result((outcome, body[frames.REPLY.size :]))
        except Exception:  # noqa: BLE001 — an answer that cannot be read: the relay is not to be trusted
            self.break_()

    def connection_lost(self, exc: Exception | None) -> None:
        self.break_()

    def break_(self) -> None:
        self.broken = True
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        waiting, self.waiting = self.waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(RelayBroken())

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float) -> PubAck:
        if self.broken or self.transport is None:
            raise RelayBroken
        self.seq += 1
        fut = asyncio.get_running_loop().create_future()
        self.waiting[self.seq] = fut
        self.transport.write(frames.request(self.seq, subject, payload, headers))
        try:
            outcome, data = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self.break_()  # a worker that does not answer in a publish's wait is not waited for again
            raise RelayBroken from None
        if outcome == frames.NO_STREAM:
            raise NoStreamResponseError
        if outcome != frames.ACK:
            self.break_()
            raise RelayBroken
        answer = json.loads(data)
        if "error" in answer:
            raise APIError.from_error(answer["error"])
        return PubAck.from_response(answer)


class RelayedJetStream:
    """Stands in for the run's JetStream context: publishes ride the relay while it holds, then the run's
    own connection; what else a run asks of JetStream (its consumers) goes on its own connection."""

    def __init__(self, end: _RelayEnd, bus: "RunBus") -> None:
        self._end = end
        self._bus = bus
        self._timeout = 5.0  # JetStream's usual wait for an ack (publish_retrying reads it)

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float | None = None,
        stream: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> PubAck:
        if not self._end.broken:
            try:
                return await self._end.publish(subject, payload, dict(headers or {}), timeout or self._timeout)
            except RelayBroken:
                pass  # published again below, with the same message id
        js = await self._bus.jetstream()
        return await js.publish(subject, payload, timeout=timeout, stream=stream, headers=headers)

    async def add_consumer(self, *args: Any, **kwargs: Any) -> Any:
        return await (await self._bus.jetstream()).add_consumer(*args, **kwargs)

    async def pull_subscribe_bind(self, *args: Any, **kwargs: Any) -> Any:
        return await (await self._bus.jetstream()).pull_subscribe_bind(*args, **kwargs)

    async def delete_consumer(self, *args: Any, **kwargs: Any) -> Any:
        return await (await self._bus.jetstream()).delete_consumer(*args, **kwargs)


class RunBus:
    """The run's connection, made by `connect`: at once, or on first need when publishes are relayed."""

    def __init__(self, connect: Callable[[], Awaitable[NATS]]) -> None:
        self._connect = connect
        self._nc: NATS | None = None
        self._connecting = asyncio.Lock()
        self._end: _RelayEnd | None = None
        self.js: Any = None  # what the reporter and the session publish through

    @classmethod
    async def open(cls, connect: Callable[[], Awaitable[NATS]], relay_fd: int = -1) -> "RunBus":
        bus = cls(connect)
        if relay_fd >= 0:
            with contextlib.suppress(OSError):
                sock = socket.socket(fileno=relay_fd)
                end = _RelayEnd()
                await asyncio.get_running_loop().create_unix_connection(lambda: end, sock=sock)
                bus._end, bus.js = end, RelayedJetStream(end, bus)
        if bus.js is None:
            bus.js = await bus.jetstream()
        return bus

    @property
    def relayed(self) -> bool:
        """Whether publishes ride the worker's relay (while it holds), not this run's own connection."""
        return self._end is not None

    async def nats(self) -> NATS:
        async with self._connecting:
            if self._nc is None:
                self._nc = await (self._connect() if self._end is None else self._connect_riding_out())
        return self._nc

    async def _connect_riding_out(self) -> NATS:
        """A relayed run connects mid-run, maybe while the bus itself is out (the relay broke for that): it
        tries for as long as a publish rides out the bus's absence, as a connected client would reconnect."""
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + PUBLISH_RETRY_S, 0.1
        while True:
            try:
                return await self._connect()
            except Exception:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def jetstream(self) -> JetStreamContext:
        return (await self.nats()).jetstream()

    async def close(self) -> None:
        if self._end is not None:
            self._end.break_()
        if self._nc is not None:
            await self._nc.close()

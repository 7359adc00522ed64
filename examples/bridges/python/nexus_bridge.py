#!/usr/bin/env python3
"""Nexus agent-side bridge for Python: run an agent as a child process of a Nexus kernel.

Standard library only (Python 3.9+). The kernel starts this program and speaks the
bridge protocol (proto/bridge/README.md) over stdin/stdout: one JSON object per line.
stdout belongs to the protocol; print diagnostics to stderr (the kernel logs them).

    from nexus_bridge import Agent, run

    class Adder(Agent):
        async def handle(self, message):
            return {"sum": message.payload["a"] + message.payload["b"]}  # becomes a Response

    run(Adder("adder"))

`handle` may return None (no reply), a payload (sent back as a Response to the sender),
or a Message (sent as is). It may also `await self.bridge.ask(...)` / call
`self.bridge.send(...)` to talk to other agents through the kernel.
"""

import asyncio
import itertools
import json
import os
import sys
import threading
import time
import traceback
import uuid

COMMAND, EVENT, QUERY, RESPONSE = "Command", "Event", "Query", "Response"
AGENT_ID_ENV = "NEXUS_AGENT_ID"
_ids = itertools.count(1)
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_decode = json.JSONDecoder().decode
_PREFIX = uuid.uuid4().hex[:12]


def new_id():
    return "%s%010x" % (_PREFIX, next(_ids))


class Message:
    __slots__ = ("id", "timestamp", "from_", "to", "kind", "payload", "conversation_id", "reply_to", "trace_id")

    def __init__(
        self, from_, to, kind, payload=None, id=None, timestamp=None, conversation_id=None, reply_to=None, trace_id=None
    ):
        self.from_ = from_
        self.to = to
        self.kind = kind
        self.payload = payload
        self.id = id or new_id()
        self.timestamp = time.time() if timestamp is None else timestamp
        self.conversation_id = conversation_id
        self.reply_to = reply_to
        self.trace_id = trace_id

    @classmethod
    def from_wire(cls, d):
        m = cls.__new__(cls)
        m.from_ = d["from"]
        m.to = d["to"]
        m.kind = d["kind"]
        get = d.get
        m.payload = get("payload")
        m.id = get("id") or new_id()
        m.timestamp = get("timestamp") or time.time()
        m.conversation_id = get("conversation_id")
        m.reply_to = get("reply_to")
        m.trace_id = get("trace_id")
        return m

    def to_wire(self):
        d = {"id": self.id, "timestamp": self.timestamp, "from": self.from_, "to": self.to, "kind": self.kind}
        if self.payload is not None:
            d["payload"] = self.payload
        if self.conversation_id is not None:
            d["conversation_id"] = self.conversation_id
        if self.reply_to is not None:
            d["reply_to"] = self.reply_to
        if self.trace_id is not None:
            d["trace_id"] = self.trace_id
        return d

    def reply(self, from_, payload=None):
        """A Response to this message: back to its sender, same conversation and trace."""
        return Message(
            from_,
            self.from_,
            RESPONSE,
            payload,
            conversation_id=self.conversation_id or self.id,
            reply_to=self.id,
            trace_id=self.trace_id,
        )

    def __repr__(self):
        return "Message(%r)" % (self.to_wire(),)


class Agent:
    """Subclass and implement `async handle(message)`. `self.bridge` is set before on_start."""

    def __init__(self, name=None, id=None):
        self.name = name or type(self).__name__
        self.id = id or os.environ.get(AGENT_ID_ENV) or str(uuid.uuid4())
        self.bridge = None

    async def handle(self, message):
        raise NotImplementedError

    async def on_start(self, bridge):
        pass

    async def on_stop(self):
        pass


class AskTimeout(Exception):
    pass


class _EOF:
    pass


class Bridge:
    def __init__(self, agent, stdin=None, stdout=None):
        self.agent = agent
        self._stdin = stdin or sys.stdin
        self._stdout = stdout or sys.stdout.buffer
        self._inbox = []
        self._inbox_pos = 0
        self._wakeup = None
        self._pending = {}  # ask id -> future
        self._out = []
        self._flush_scheduled = False
        self._buffer = b""
        self._loop = None
        self.malformed = 0

    # ---- output -------------------------------------------------------------------------

    def _emit(self, kind, payload):
        self._out.append(_encode({"type": kind, "payload": payload}).encode() + b"\n")
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self):
        self._flush_scheduled = False
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._stdout.write(data)
            self._stdout.flush()

    def send(self, to, payload=None, kind=COMMAND, **fields):
        """Send a message to another agent (through the kernel). Returns the message."""
        message = Message(self.agent.id, to, kind, payload, **fields)
        self._emit("message", message.to_wire())
        return message

    async def ask(self, to, payload=None, timeout=30.0, kind=QUERY, **fields):
        """Send a message and wait for the message that replies to it."""
        fut = self._loop.create_future()
        message = Message(self.agent.id, to, kind, payload, **fields)
        self._pending[message.id] = fut
        try:
            self._emit("message", message.to_wire())
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:  # noqa: UP041 - distinct from TimeoutError before 3.11
            raise AskTimeout("no reply from %s within %ss" % (to, timeout)) from None
        finally:
            self._pending.pop(message.id, None)

    def log(self, message, level="info"):
        self._emit("log", {"level": level, "message": str(message)})

    # ---- input --------------------------------------------------------------------------

    def _data(self, data):
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        for line in lines:
            if line.strip():
                self._line(line)
        self._wake()

    def _line(self, line):
        try:
            item = _decode(line.decode())
            kind = item["type"]
            if kind == "message":
                message = Message.from_wire(item["payload"])
                fut = self._pending.get(message.reply_to) if message.reply_to else None
                if fut is not None:
                    if not fut.done():
                        fut.set_result(message)
                else:
                    self._inbox.append(message)
            elif kind == "shutdown":
                self._inbox.append(_EOF)
            else:
                raise ValueError("unknown line type %r" % (kind,))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.malformed += 1
            sys.stderr.write("nexus_bridge: skipping malformed line (%s): %r\n" % (exc, line[:200]))

    def _read_blocking(self):
        fd = self._stdin.fileno()
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self._loop.call_soon_threadsafe(self._eof)
                return
            self._loop.call_soon_threadsafe(self._data, chunk)

    def _eof(self):
        self._inbox.append(_EOF)
        self._wake()

    def _wake(self):
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def run(self):
        self._loop = loop = asyncio.get_running_loop()
        bridge = self

        class _Reader(asyncio.Protocol):
            def data_received(self, data):
                bridge._data(data)

            def eof_received(self):
                bridge._eof()

            def connection_lost(self, exc):
                bridge._eof()

        try:
            await loop.connect_read_pipe(_Reader, self._stdin)
        except ValueError:  # stdin is a regular file (tests, replays): read it in a thread
            threading.Thread(target=self._read_blocking, daemon=True).start()
        agent = self.agent
        agent.bridge = self
        self._emit("register", {"id": agent.id, "name": agent.name, "protocol": 1})
        self.flush()
        await agent.on_start(self)
        handle = agent.handle
        try:
            while True:
                if self._inbox_pos >= len(self._inbox):  # all handled: wait for more
                    self._inbox.clear()
                    self._inbox_pos = 0
                    self._wakeup = loop.create_future()
                    await self._wakeup
                    continue
                message = self._inbox[self._inbox_pos]
                self._inbox_pos += 1
                if message is _EOF:
                    break
                try:
                    result = await handle(message)
                except Exception as exc:  # noqa: BLE001 — a handler's failure is reported to the host, the agent lives on
                    traceback.print_exc(file=sys.stderr)
                    self._emit("error", {"message_id": message.id, "error": "%s: %s" % (type(exc).__name__, exc)})
                    continue
                if result is None:
                    continue
                if not isinstance(result, Message):
                    result = message.reply(agent.id, result)
                self._emit("response" if result.kind == RESPONSE else "message", result.to_wire())
        finally:
            await agent.on_stop()
            self.flush()


def run(agent):
    """Run `agent` until the kernel sends shutdown or closes stdin."""
    try:
        asyncio.run(Bridge(agent).run())
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        sys.exit(0)  # the kernel went away

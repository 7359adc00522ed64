"""A fake LLM server: a real HTTP/1.1 server on 127.0.0.1 (asyncio streams, a free port)
that answers each request with the next queued reply — JSON, a streamed event stream
(chunked, split wherever the test likes), an error, or silence — and records what it got.
The providers' production httpx code is what talks to it."""

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import pytest

from nexus.agent_runner.llm.retry import RetryPolicy


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    pieces: Iterable[bytes] | None = None  # sent chunked, one write per piece (may be produced lazily)
    hang: bool = False  # send nothing at all
    cut: bool = False  # drop the connection before the chunked body is complete


class FakeLLMServer:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Request] = []
        self.otherwise: Reply | None = None  # what every request gets once the queue is empty
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    # What the next requests get, in order.
    def json(self, obj: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.replies.append(
            Reply(
                status=status,
                headers={"content-type": "application/json", **(headers or {})},
                body=json.dumps(obj).encode(),
            )
        )

    def sse(self, payload: str, *, split_every: int | None = None, cut: bool = False) -> None:
        data = payload.encode()
        step = split_every or len(data) or 1
        self.replies.append(
            Reply(
                headers={"content-type": "text/event-stream", "cache-control": "no-cache"},
                pieces=[data[i : i + step] for i in range(0, len(data), step)],
                cut=cut,
            )
        )

    def hang(self) -> None:
        self.replies.append(Reply(hang=True))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Request(method, path, headers, body))

        reply = (
            self.replies.popleft()
            if self.replies
            else self.otherwise
            or Reply(status=599, headers={"content-type": "text/plain"}, body=b"the fake server has no reply queued")
        )
        if reply.hang:
            await reader.read()  # until the client gives up and closes
            return
        status_line = f"HTTP/1.1 {reply.status} {_reason(reply.status)}\r\n"
        out_headers = {**reply.headers, "connection": "close"}
        if reply.pieces is None:
            out_headers["content-length"] = str(len(reply.body))
        else:
            out_headers["transfer-encoding"] = "chunked"
        writer.write((status_line + "".join(f"{k}: {v}\r\n" for k, v in out_headers.items()) + "\r\n").encode())
        if reply.pieces is None:
            writer.write(reply.body)
        else:
            for piece in reply.pieces:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            if not reply.cut:
                writer.write(b"0\r\n\r\n")
        await writer.drain()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


@pytest.fixture
async def llm_server() -> AsyncIterator[FakeLLMServer]:
    server = FakeLLMServer()
    await server.start()
    yield server
    await server.stop()


class SleepRecorder:
    """Stands in for asyncio.sleep in the retry policy: records each wait, waits for none."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def retry(sleeps: SleepRecorder) -> RetryPolicy:
    return RetryPolicy(max_attempts=3, initial_backoff_s=0.5, max_backoff_s=4.0, jitter_s=0.25, sleep=sleeps)

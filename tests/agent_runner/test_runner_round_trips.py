"""What a trivial run says to NATS, read off the wire: a recording proxy sits between the runner (its
own process, as the worker starts it) and the real nats-server. Past connecting, the run waits for
the server only for its events' acknowledgements — no PING to confirm its session's subscriptions,
none to drain at exit — and the session's inbox is subscribed before anything the run publishes
after it, which is what lets it skip the confirmation."""

import asyncio
import re
from urllib.parse import urlparse

import pytest

from tests.agent_runner.test_runner_support import config, final_status, js, read_events, start_runner  # noqa: F401 — fixtures and helpers, used by name

pytestmark = pytest.mark.infra


class RecordingProxy:
    """Forwards TCP connections to nats-server, keeping every byte each client sent."""

    def __init__(self, upstream: str) -> None:
        parts = urlparse(upstream)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 4222
        self.sent: list[bytearray] = []  # per connection, in the order they were opened
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"nats://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        record = bytearray()
        self.sent.append(record)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bytearray | None) -> None:
            try:
                while data := await src.read(65536):
                    if keep is not None:
                        keep += data
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, record), pipe(up_reader, writer, None))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


async def test_a_trivial_run_waits_on_nats_only_for_its_acks(js, nats_url, tmp_path) -> None:
    proxy = RecordingProxy(nats_url)
    url = await proxy.start()
    try:
        cfg = config("steps:\n  - say: done\n")
        r = await start_runner(tmp_path, url, cfg)
        assert await r.exit_code() == 0, r.log()
    finally:
        await proxy.close()
    events = await read_events(js, cfg.run_id)
    assert final_status(events)["status"] == "succeeded"
    assert [e["type"] for _, e in events].count("run.status") == 2  # running and succeeded: every event stored
    inbox = f"nexus.agent.{cfg.session_id}.inbox".encode()
    (wire,) = [bytes(sent) for sent in proxy.sent if b"SUB " + inbox in sent]  # the run's connection
    lines = wire.split(b"\r\n")
    # The one PING is the handshake's (CONNECT, then PING): nothing after it waits on a PONG.
    assert [i for i, line in enumerate(lines) if line == b"PING"] == [1]  # (no message: CONNECT carries the JWT)
    assert lines[0].startswith(b"CONNECT ")
    # The session's inbox is subscribed before the run's next publish (its session event), so the
    # server knows it before anything that could make another process write to it.
    subscribed = next(i for i, line in enumerate(lines) if line.startswith(b"SUB " + inbox))
    session_event = next(i for i, line in enumerate(lines) if re.match(rb"HPUB nexus\.run\.[^.]+\.session ", line))
    assert subscribed < session_event
    # Its connection subscribes to its replies (JetStream's acks) and to its session's inbox, nothing
    # more: the kernel's own inbox and its send acknowledgements wait for a send this run never makes.
    subscriptions = [line.split()[1] for line in lines if line.startswith(b"SUB ")]
    assert len(subscriptions) == 2 and inbox in subscriptions, subscriptions

"""A durable consumer whose state lives in nats-server's memory, on the work-queue commands stream: what
a real server restart (SIGKILL) does to it, and that the fetch loop makes it anew and carries on. And a
fetch lingers on the server (it is not a poll) yet `stop` still ends the loop at once."""

import asyncio
import contextlib
import os
import signal
import uuid
from pathlib import Path

import pytest
from nats.js.errors import NotFoundError

from nexus.dev.servers import Managed, start_nats
from nexus.events.bus import connect, ensure_streams
from nexus.events.catalog import CMDS_STREAM
from nexus.events.consumer import fetched, pull_config, pulling, remaking

pytestmark = pytest.mark.infra


def _kill_and_restart(server: Managed, data_dir: Path) -> Managed:
    """SIGKILL nats-server (no graceful shutdown: nothing is flushed on the way out) and start it again on
    the same port and data."""
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    port = int(server.url.rsplit(":", 1)[1])
    return start_nats(data_dir, port=port)


async def _until(check, tries: int = 600) -> None:
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


def _config(durable: str, subject: str):
    return pull_config(durable=durable, subject=subject, max_deliver=5, ack_wait_s=30, max_ack_pending=100, memory=True)


async def test_a_memory_consumer_on_the_work_queue_gets_exactly_the_unacked_after_a_server_restart(
    tmp_path: Path,
) -> None:
    """The claim the worker's launch and cancel consumers rely on: acknowledged commands are gone from the
    work-queue stream, so the memory consumer (lost with the server) made anew delivers exactly those
    nobody acknowledged — none lost, none acknowledged handed out again."""
    data = tmp_path / "nats"
    server = start_nats(data)
    nc = await connect(server.url, "test-memory-consumer")
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        subject, durable = f"nexus.cmd.test_{uuid.uuid4().hex[:8]}", "test-memory"
        for i in range(3):
            await js.publish(subject, f"m{i}".encode())
        async with pulling(js, stream=CMDS_STREAM, subject=subject, config=_config(durable, subject)) as sub:
            msgs: list = []
            while len(msgs) < 3:
                msgs += await sub.fetch(3 - len(msgs), timeout=5)
            first = next(m for m in msgs if m.data == b"m0")
            await first.ack_sync()  # the server has it: m0 is removed from the stream
            server = _kill_and_restart(server, data)
            await _until(lambda: _jetstream_answers(js))
            with pytest.raises(NotFoundError):  # in memory: gone with the server
                await js.consumer_info(CMDS_STREAM, durable)
        async with pulling(js, stream=CMDS_STREAM, subject=subject, config=_config(durable, subject)) as sub:
            again: list = []
            with contextlib.suppress(Exception):
                while len(again) < 3:
                    again += await sub.fetch(3, timeout=1)
        assert sorted(m.data for m in again) == [b"m1", b"m2"]
        assert all(m.metadata.num_delivered == 1 for m in again)
    finally:
        await nc.close()
        server.stop()


async def _jetstream_answers(js) -> bool:
    """The client reconnected and JetStream (recovering its streams after the restart) answers."""
    try:
        await js.stream_info(CMDS_STREAM)
    except Exception:  # noqa: BLE001 — reconnecting, or JetStream not up yet
        return False
    return True


async def test_the_fetch_loop_makes_a_lost_memory_consumer_anew_and_carries_on(tmp_path: Path) -> None:
    """A server restart loses a memory durable and the pull request lingering on it: the loop (as the worker's
    launch intake runs it) asks again at the reconnect, makes the durable anew in place and hands out what is
    published after the restart, without ending."""
    data = tmp_path / "nats"
    server = start_nats(data)
    nc = await connect(server.url, "test-memory-consumer-2")
    stop = asyncio.Event()
    got: list[bytes] = []
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        subject, durable = f"nexus.cmd.test_{uuid.uuid4().hex[:8]}", "test-memory-2"
        config = _config(durable, subject)

        async def loop() -> None:
            async with pulling(js, stream=CMDS_STREAM, subject=subject, config=config) as sub:
                # An hour-long fetch: what is published after the restart arrives only if the reconnect ends
                # the request that died with the old server, and the durable is made anew.
                remake = remaking(js, CMDS_STREAM, config)
                batches = fetched(sub, durable, stop, lambda: 8, remake=remake, wait_s=3600)
                async with contextlib.aclosing(batches) as each:
                    async for msgs in each:
                        for m in msgs:
                            got.append(m.data)
                            await m.ack_sync()

        task = asyncio.create_task(loop())
        await js.publish(subject, b"before")

        async def got_(n: int) -> bool:
            return len(got) >= n

        await asyncio.wait_for(_until(lambda: got_(1)), 30)
        server = _kill_and_restart(server, data)
        await _until(lambda: _jetstream_answers(js))
        await js.publish(subject, b"after")
        await asyncio.wait_for(_until(lambda: got_(2)), 60)
        assert not task.done()  # the loop carried on
        stop.set()
        await asyncio.wait_for(task, 30)
        assert got == [b"before", b"after"]
    finally:
        stop.set()
        await nc.close()
        server.stop()


async def test_stop_ends_a_lingering_fetch_and_what_it_received_goes_back(tmp_path: Path) -> None:
    """A fetch lingers on the server for as long as it is let (an hour here), so an idle consumer asks
    rarely; `stop` ends the loop at once all the same."""
    server = start_nats(tmp_path / "nats")
    nc = await connect(server.url, "test-memory-consumer-3")
    stop = asyncio.Event()
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        subject, durable = f"nexus.cmd.test_{uuid.uuid4().hex[:8]}", "test-linger"
        config = _config(durable, subject)
        started = asyncio.Event()
        handed: list[bytes] = []

        async def loop() -> None:
            async with pulling(js, stream=CMDS_STREAM, subject=subject, config=config) as sub:
                started.set()
                async with contextlib.aclosing(fetched(sub, durable, stop, lambda: 8, wait_s=3600)) as each:
                    async for msgs in each:
                        handed.extend(m.data for m in msgs)
                        for m in msgs:
                            await m.ack_sync()

        task = asyncio.create_task(loop())
        await started.wait()
        await js.publish(subject, b"one")  # arrives while the hour-long request lingers: handed out at once
        await asyncio.wait_for(_until(lambda: _true(handed == [b"one"])), 30)
        stop.set()
        await asyncio.wait_for(task, 30)  # not the hour the request had left
    finally:
        stop.set()
        await nc.close()
        server.stop()


async def _true(value: bool) -> bool:
    return value

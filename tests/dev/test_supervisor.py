"""The local stack's supervisor restarts what crashes, with backoff, and gives up on a crash loop."""

import io
import subprocess
import sys

import pytest

from nexus.dev.supervisor import CrashLoop, Supervisor


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _exits(code: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    p.wait()
    return p


def _stays() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_crashed_process_is_restarted_after_a_backoff_and_printed() -> None:
    clock, out = Clock(), io.StringIO()
    sup = Supervisor(out=out, clock=clock, base_backoff_s=0.5)
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        started.append(_stays())
        return started[-1]

    sup.watch("worker", _exits(3), start)
    assert sup.check() == []  # the crash is seen; the restart waits for its backoff
    assert "worker exited with code 3; restarting in 0.5s" in out.getvalue()
    clock.t += 0.5
    assert sup.check() == ["worker"]
    assert "worker restarted" in out.getvalue()
    assert sup.check() == [] and len(started) == 1  # alive now: left alone
    for p in started:
        p.kill()
        p.wait()


def test_backoff_grows_and_a_crash_loop_gives_up_with_a_clear_message() -> None:
    clock, out = Clock(), io.StringIO()
    sup = Supervisor(out=out, clock=clock, max_restarts=3, window_s=60, base_backoff_s=0.5)
    sup.watch("core-api", _exits(1), lambda: _exits(1), log_hint=".nexus/logs/core-api.log")
    waits = []
    with pytest.raises(
        CrashLoop, match=r"core-api keeps crashing .*3 restarts.*giving up; see .nexus/logs/core-api.log"
    ):
        for _ in range(10):
            sup.check()
            w = sup.watched["core-api"]
            if w.due is not None:
                waits.append(w.due - clock.t)
                clock.t = w.due
    assert waits == [0.5, 1.0, 2.0]


@pytest.mark.infra
async def test_a_restarted_nats_server_keeps_its_authorization_and_streams(tmp_path) -> None:
    """The stack restarts its own nats-server (a crash under `make run`, or the fault matrix's kill) with
    the same operator, accounts and data: its users connect again and find their streams."""
    import os
    import signal

    from nexus.dev.stack import Stack
    from nexus.events.bus import connect, ensure_streams
    from nexus.events.catalog import RUNS_STREAM

    stack = Stack(home=tmp_path / "nexus", mongodb_url="mongodb://unused")
    stack.start_infra()
    try:
        nc = await connect(stack.nats_url or "", "test-restart", creds=stack.creds("tools"))
        await ensure_streams(nc.jetstream())
        await nc.close()
        server = next(s for s in stack.servers if s.name == "nats")
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        stack.restart_server("nats")
        nc = await connect(stack.nats_url or "", "test-restart", creds=stack.creds("tools"))
        try:
            info = await nc.jetstream().stream_info(RUNS_STREAM)  # JetStream of our account, with its stream
            assert info.config.name == RUNS_STREAM
        finally:
            await nc.close()
    finally:
        stack.stop()


@pytest.mark.infra
async def test_a_restarted_database_keeps_its_data(tmp_path) -> None:
    """FerretDB restarted after a kill carries on with the same data, also when its PostgreSQL cluster
    is a throw-away one under the temp dir (tests, CI): a restart is not a fresh database."""
    import os
    import signal

    from pymongo import AsyncMongoClient

    from nexus.dev.stack import Stack

    stack = Stack(home=tmp_path / "nexus", nats_url="nats://unused:4222")
    stack.auth_dir = tmp_path  # not started here: only the database is
    stack.start_infra()
    try:
        client = AsyncMongoClient(stack.mongodb_url, serverSelectionTimeoutMS=30_000)
        await client["restart"]["things"].insert_one({"_id": "kept"})
        await client.close()
        server = next(s for s in stack.servers if s.name == "ferretdb")
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        stack.restart_server("ferretdb")
        client = AsyncMongoClient(stack.mongodb_url, serverSelectionTimeoutMS=30_000)
        try:
            assert await client["restart"]["things"].find_one({"_id": "kept"}) == {"_id": "kept"}
        finally:
            await client.close()
    finally:
        stack.stop()

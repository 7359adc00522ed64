"""Worker tests against the real NATS and FerretDB: real worker processes, real agent-runner
processes with the scripted LLM. core-api is not running: tests write runs into the database
themselves (as core-api would) and read what the worker and the runners publish."""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
from nats.js.api import DeliverPolicy, KeyValueConfig

from nexus.db.connection import connect_db
from nexus.db.documents import Run
from nexus.db.run_configs import config_of, store_run
from nexus.dev.servers import free_port
from nexus.domain.agents import Limits, LLMSpec, Permissions
from nexus.events.bus import Publisher, connect, ensure_streams
from nexus.events.catalog import RUNS_STREAM
from nexus.events.envelope import decode_raw
from nexus.events.payloads import CancelRun, LaunchRun, RunConfig
from nexus.worker.launcher import LAUNCH_BUCKET
from nexus.worker.runtimes.base import RunHandle, RunRequest, RuntimeError_
from nexus.worker.runtimes.run_files import LINK

QUICK = (
    'steps:\n  - tool_calls:\n      - name: write_file\n        args: {path: "a.txt", content: "hi"}\n  - say: "done"\n'
)
SLEEPY = 'steps:\n  - tool_calls:\n      - name: run_command\n        args: {{cmd: "sleep {s}"}}\n  - say: "slept"\n'


def sleepy(seconds: int = 30) -> str:
    return SLEEPY.format(s=seconds)


def trivial_config(run_id: str) -> RunConfig:
    """A trivial run's config, for tests that launch without a database."""
    return RunConfig(
        run_id=run_id,
        agent_id="agt_test",
        task_id="task_test",
        session_id="ses_test",
        system_prompt="You test the worker.",
        tools=[],
        llm=msgspec.convert({"provider": "scripted", "script": 'steps:\n  - say: "done"\n'}, LLMSpec),
    )


class FlakyRuntime:
    """A runtime whose start fails as told, then starts (no process): for the launcher's own logic."""

    name = "flaky"

    def __init__(self, failures: list[RuntimeError_]) -> None:
        self.failures = failures
        self.tries = 0

    async def start_run(self, request: RunRequest) -> RunHandle:
        self.tries += 1
        if self.failures:
            raise self.failures.pop(0)
        return RunHandle(run_id=request.run_id, attempt=request.attempt, runtime=self.name, ref="42")


class Workers:
    """Worker processes (`python -m nexus.worker.main`) sharing one database and NATS."""

    def __init__(self, tmp: Path, nats_url: str, mongo_url: str, db: str, nats_auth: Path | None = None) -> None:
        self.tmp, self.nats_url, self.mongo_url, self.db = tmp, nats_url, mongo_url, db
        self.nats_auth = nats_auth
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def log_of(self, proc: subprocess.Popen) -> str:
        return next(log.read_text(errors="replace") for p, log in self.procs if p is proc)

    def start(self, name: str = "w1", *, preexec=None, **settings: object) -> subprocess.Popen:
        """A worker with `settings` (NEXUS_<NAME> each); `preexec` runs in its process before it executes."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_") or k == "NEXUS_TOOLS_DIR"}
        env.update(
            NEXUS_NATS_URL=self.nats_url,
            NEXUS_MONGODB_URL=self.mongo_url,
            NEXUS_MONGODB_DB=self.db,
            NEXUS_NATS_CREDS=str(self.nats_auth / "worker.creds") if self.nats_auth else "",
            NEXUS_NATS_RUN_SIGNER_FILE=str(self.nats_auth / "run-signer") if self.nats_auth else "",
            NEXUS_WORKER_ID=f"{name}-{uuid.uuid4().hex[:6]}",
            NEXUS_METRICS_HOST="127.0.0.1",
            NEXUS_METRICS_PORT=str(free_port()),
            NEXUS_WORKSPACES_DIR=str(self.tmp / name / "runs"),
            NEXUS_SECRETS_DIR=str(self.tmp / name / "secrets"),
            NEXUS_LOG_FORMAT="text",
            NEXUS_RUNNER_HEARTBEAT_S="0.5",
            NEXUS_SWEEP_INTERVAL_S="0.5",
            NEXUS_HEARTBEAT_TIMEOUT_S="120",
            PYTHONUNBUFFERED="1",
        )
        env.update({f"NEXUS_{k.upper()}": str(v) for k, v in settings.items()})
        log = self.tmp / f"{name}.log"
        with open(log, "ab") as out:  # the worker writes to its own copy of the descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "nexus.worker.main"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
            )
        self.procs.append((proc, log))
        return proc

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        # The runs' control files, in memory when the machine has a tmpfs (runtimes/run_files.py): nothing else frees them.
        for link in self.tmp.glob(f"*/runs/{LINK}"):
            if link.is_symlink():
                shutil.rmtree(link.resolve(), ignore_errors=True)


class Bus:
    """The test's side of NATS: publish commands as core-api would, collect every run event."""

    def __init__(self, nc, publisher: Publisher) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.publisher = publisher
        self.events: list[tuple[str, str, dict, str]] = []  # (run_id, type, data, occurred_at)

    def of(self, run_id: str, type_: str | None = None) -> list[dict]:
        return [data for rid, t, data, _ in self.events if rid == run_id and (type_ is None or t == type_)]

    def runtime(self, run_id: str, phase: str) -> list[dict]:
        return [d for d in self.of(run_id, "run.runtime") if d["phase"] == phase]

    def statuses(self, run_id: str) -> list[str]:
        return [d["status"] for d in self.of(run_id, "run.status")]

    async def until(self, predicate, *, tries: int = 400, every_s: float = 0.1) -> None:
        """Poll until predicate() holds; the bound is a count of polls, not an assertion on time."""
        for _ in range(tries):
            if predicate():
                return
            await asyncio.sleep(every_s)
        raise AssertionError(f"condition never held; events: {[(r, t, d) for r, t, d, _ in self.events][-30:]}")

    async def until_async(self, predicate, *, tries: int = 400, every_s: float = 0.1) -> None:
        for _ in range(tries):
            if await predicate():
                return
            await asyncio.sleep(every_s)
        raise AssertionError("condition never held")

    async def launch(self, run: Run, *, msg_id: str | None = None, priority: int | None = None) -> None:
        cfg = await run_config(run)
        await self.publisher.publish(
            "worker.launch_run",
            LaunchRun(attempt=run.attempt, config=cfg, priority=run.priority if priority is None else priority),
            msg_id=msg_id or run.launch_msg_id,
            correlation_id=run.id,
        )

    async def cancel(self, run_id: str) -> None:
        await self.publisher.publish("worker.cancel_run", CancelRun(run_id=run_id), correlation_id=run_id)


async def make_run(
    script: str,
    *,
    agent_id: str = "agt_test",
    wall_clock_s: int = 120,
    priority: int = 0,
    max_steps: int = 10,
    allow: tuple[str, ...] = ("sleep *",),
    secrets: tuple[str, ...] = (),
    **fields,
) -> Run:
    """A run as core-api stores it before commanding its launch."""
    from nexus.domain.ids import new_id, new_ulid

    run_id = new_id("run")
    cfg = RunConfig(
        run_id=run_id,
        agent_id=agent_id,
        task_id=new_id("task"),
        session_id=new_id("ses"),
        system_prompt="You test the worker.",
        tools=["write_file", "run_command", "note", "finish"],
        permissions=msgspec.convert(
            {"can_commit": False, "commands": {"allow": list(allow), "default": "deny"}}, Permissions
        ),
        llm=msgspec.convert({"provider": "scripted", "script": script}, LLMSpec),
        limits=msgspec.convert({"wall_clock_s": wall_clock_s, "max_steps": max_steps}, Limits),
        secrets=list(secrets),
    )
    run = Run(
        id=run_id,
        task_id=cfg.task_id,
        agent_id=agent_id,
        agent_revision=1,
        session_id=cfg.session_id,
        wall_clock_s=wall_clock_s,
        priority=priority,
        launch_msg_id=new_ulid(),
        **fields,
    )
    await store_run(run, msgspec.to_builtins(cfg))
    return run


async def run_config(run: Run) -> RunConfig:
    """The run's config as stored beside it (what core-api sends with its launch)."""
    return msgspec.convert(await config_of(run.id), RunConfig)


@pytest.fixture
async def db_name(mongo_url: str) -> AsyncIterator[str]:
    name = f"worker_{uuid.uuid4().hex[:10]}"
    client = await connect_db(mongo_url, name)
    yield name
    await client.close()


@pytest.fixture
async def bus(nats_url: str, nats_creds: str) -> AsyncIterator[Bus]:
    nc = await connect(nats_url, "worker-tests", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    await js.create_key_value(KeyValueConfig(bucket=LAUNCH_BUCKET, ttl=7 * 86400, history=1))
    b = Bus(nc, Publisher(js, "core-api"))

    async def collect(msg) -> None:
        env = decode_raw(msg.data)
        b.events.append((msg.subject.split(".")[2], env.type, msgspec.json.decode(env.data), env.occurred_at))

    sub = await js.subscribe(
        "nexus.run.>", stream=RUNS_STREAM, cb=collect, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
    )
    yield b
    await sub.unsubscribe()
    await nc.drain()


@pytest.fixture
def workers(tmp_path: Path, nats_url: str, mongo_url: str, db_name: str, nats_auth: Path | None) -> Iterator[Workers]:
    w = Workers(tmp_path, nats_url, mongo_url, db_name, nats_auth)
    try:
        yield w
    finally:
        w.stop_all()
        for _, log in w.procs:
            print(f"----- {log.name} -----\n{log.read_text(errors='replace')[-5000:]}")


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    # Only zombies left (reaped by init later) count as gone.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return False
    return True

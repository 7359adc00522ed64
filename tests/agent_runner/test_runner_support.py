"""The runner as a process against the real NATS (no database): a run config file, the runner
launched the way the local runtime launches it, every event of the run read back from
JetStream, and decisions published where core-api would publish them. Also the first-event
fast path's own tests."""

import asyncio
import os
import resource
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from nexus.agent_runner import first_event
from nexus.events.bus import Publisher, connect, ensure_streams
from nexus.events.credentials import RunSigner
from nexus.events.permissions import RunIdentity
from nexus.events.catalog import RUNS_STREAM, run_filter
from nexus.events.envelope import Envelope, decode_raw
from nexus.events.payloads import ApprovalDecided, RunConfig, RunStatusChanged
from tests.gitrepo import git, make_bare_repo  # noqa: F401 — re-exported to the runner tests


bare_repo = make_bare_repo  # the name these tests use


def config(script: str, **fields) -> RunConfig:
    run_id = fields.pop("run_id", f"run_{uuid.uuid4().hex[:16]}")
    base = {
        "run_id": run_id,
        "agent_id": "agent_t",
        "agent_revision": 3,
        "task_id": "task_t",
        "session_id": f"ses_{run_id[4:]}",
        "system_prompt": "test",
        "llm": {"provider": "scripted", "script": script},
        "task": {"title": "Test task"},
    }
    return msgspec.convert(base | fields, RunConfig)


@dataclass
class RunnerProc:
    cfg: RunConfig
    dir: Path
    proc: asyncio.subprocess.Process
    events: list[tuple[str, dict]] = field(default_factory=list)

    @property
    def workspace(self) -> Path:
        return self.dir / "workspace"

    async def exit_code(self) -> int:
        return await asyncio.wait_for(self.proc.wait(), 120)  # a bound so a hung runner fails the test

    def log(self) -> str:
        return (self.dir / "runner.log").read_text(errors="replace")


# The test server's run-signing key, set by the `js` fixture every runner test takes: each runner gets
# its own run credential, as the worker would mint it.
RUN_SIGNER: list = []


def run_creds(cfg: RunConfig, attempt: int = 1) -> dict[str, str]:
    if not RUN_SIGNER:
        return {}
    who = RunIdentity(cfg.run_id, attempt, cfg.session_id, cfg.parent_session_id)
    return {"NEXUS_NATS_CREDS": RUN_SIGNER[0].mint(who, cfg.limits.wall_clock_s)}


def run_environ(
    tmp: Path,
    nats_url: str,
    cfg: RunConfig,
    *,
    secrets: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, str]:
    """What the worker hands a run (its directories made under tmp/<run id>), for a runner process or a run
    played inside the test process."""
    d = tmp / cfg.run_id
    d.mkdir(parents=True)
    (d / "home").mkdir()
    (d / "run-config.json").write_bytes(msgspec.json.encode(cfg))
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(d / "home"),
        "NEXUS_NATS_URL": nats_url,
        "NEXUS_RUN_CONFIG": str(d / "run-config.json"),
        "NEXUS_WORKSPACE": str(d / "workspace"),
        "NEXUS_STATE_DIR": str(d / "state"),
        "NEXUS_ATTEMPT": "1",
        "NEXUS_HEARTBEAT_S": "30",
        **{f"NEXUS_SECRET_{k}": v for k, v in (secrets or {}).items()},
        **run_creds(cfg),
        **(env or {}),
    }


async def start_runner(
    tmp: Path,
    nats_url: str,
    cfg: RunConfig,
    *,
    secrets: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    rlimits: dict[int, int] | None = None,
    preexec=None,
) -> RunnerProc:
    """The runner as its own process; `rlimits` are applied to it as the worker does (soft, hard = value,
    value + 5 for CPU time); `preexec` runs in its process before it executes."""
    d = tmp / cfg.run_id
    full_env = run_environ(tmp, nats_url, cfg, secrets=secrets, env=env)
    with open(d / "runner.log", "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nexus.agent_runner.main",
            cwd=str(d),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec or ((lambda: _apply(rlimits)) if rlimits else None),
        )
    return RunnerProc(cfg=cfg, dir=d, proc=proc)


def _apply(rlimits: dict[int, int]) -> None:
    for kind, value in rlimits.items():
        resource.setrlimit(kind, (value, value + 5 if kind == resource.RLIMIT_CPU else value))


@pytest.fixture
async def js(nats_url: str, nats_auth, nats_creds: str):
    RUN_SIGNER[:] = [RunSigner.parse((nats_auth / "run-signer").read_text())] if nats_auth else []
    nc = await connect(nats_url, "tests", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    yield js
    await nc.drain()


async def read_events(js, run_id: str) -> list[tuple[str, dict]]:
    """Every message on nexus.run.<run_id>.> so far: (subject, envelope as JSON)."""
    sub = await js.subscribe(run_filter(run_id), stream=RUNS_STREAM, ordered_consumer=True)
    out: list[tuple[str, dict]] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1)
            except TimeoutError:
                return out
            out.append((msg.subject, msgspec.json.decode(msg.data)))
            if msg.metadata.num_pending == 0:
                return out
    finally:
        await sub.unsubscribe()


async def wait_event(js, run_id: str, predicate, attempts: int = 300) -> dict:
    """Poll the run's events until one satisfies predicate(type, data); a bounded count of polls."""
    for _ in range(attempts):
        for _subject, env in await read_events(js, run_id):
            if predicate(env["type"], env["data"]):
                return env
        await asyncio.sleep(0.1)
    raise AssertionError(f"no matching event for {run_id}: {[e['type'] for _, e in await read_events(js, run_id)]}")


async def decide(
    js, run_id: str, approval_id: str, decision: str, reason: str = "", by: str = "lead@example.com"
) -> None:
    """What core-api publishes when a lead decides (approvals/service.decide)."""
    await Publisher(js, "core-api").publish(
        "run.approval_decided",
        ApprovalDecided(approval_id=approval_id, run_id=run_id, decision=decision, reason=reason, decided_by=by),  # type: ignore[arg-type]  # decision is one of the two literals
        run_id=run_id,
    )


def final_status(events: list[tuple[str, dict]]) -> dict:
    statuses = [e["data"] for _, e in events if e["type"] == "run.status"]
    assert statuses, "the runner published no status"
    return statuses[-1]


def changes(events: list[tuple[str, dict]], kind: str | None = None) -> list[dict]:
    found = [e["data"]["change"] for _, e in events if "change" in e.get("data", {})]
    return [c for c in found if kind is None or c["type"] == kind]


# ---------------------------------------------------------------- the first-event fast path


def test_ulid_shape_and_order() -> None:
    a = first_event.new_ulid()
    assert len(a) == 26 and set(a) <= set(first_event._CROCKFORD)
    assert first_event.new_ulid()[:8] >= a[:8]  # the time part leads, so ids sort by creation


def test_running_envelope_decodes_as_the_catalog_says() -> None:
    msg_id, body = first_event.running_envelope("run_x", 2)
    env = msgspec.json.decode(body, type=Envelope)
    assert env.id == msg_id and env.type == "run.status" and env.correlation_id == "run_x"
    data = msgspec.json.decode(decode_raw(body).data, type=RunStatusChanged)
    assert data == RunStatusChanged(status="running", attempt=2)


def test_announce_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    assert first_event.announce({"NEXUS_RUN_CONFIG": str(tmp_path / "missing.json")}) is False
    (tmp_path / "c.json").write_text('{"run_id": "bad id.>"}')
    assert first_event.announce({"NEXUS_RUN_CONFIG": str(tmp_path / "c.json")}) is False
    # Nothing listens here: no ack, no claim of success.
    assert (
        first_event.publish_js("nats://127.0.0.1:1", "nexus.run.x.status", "id", b"{}", name="t", timeout_s=0.5)
        is False
    )
    assert first_event.publish_js("tls://127.0.0.1:4222", "nexus.run.x.status", "id", b"{}", name="t") is False


@pytest.mark.infra
async def test_announce_is_stored_once_and_deduplicated(js, nats_url: str) -> None:
    run_id = f"run_{uuid.uuid4().hex[:12]}"
    msg_id, body = first_event.running_envelope(run_id, 1)
    creds = run_creds(config("steps: []\n", run_id=run_id)).get("NEXUS_NATS_CREDS", "")
    as_run = {"name": "t", "creds": creds, "inbox_prefix": f"_INBOX.{run_id}" if creds else "_INBOX"}
    assert first_event.publish_js(nats_url, f"nexus.run.{run_id}.status", msg_id, body, **as_run)
    assert first_event.publish_js(
        nats_url, f"nexus.run.{run_id}.status", msg_id, body, **as_run
    )  # a dupe is acked, not stored
    events = await read_events(js, run_id)
    assert [e["id"] for _, e in events] == [msg_id]
    # A subject no stream takes gets no ack: reported as failure, not success.
    assert first_event.publish_js(nats_url, "nowhere.at.all", msg_id, body, **as_run) is False
    if creds:  # the fast path speaks with the run's own credential: another run's subject is refused
        other = f"run_{uuid.uuid4().hex[:12]}"
        assert first_event.publish_js(nats_url, f"nexus.run.{other}.status", msg_id + "x", body, **as_run) is False
        assert await read_events(js, other) == []

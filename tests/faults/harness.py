"""The fault matrix's moving parts: a stack that owns its nats-server and FerretDB (so they can be
killed too), a run that writes, commits and pushes, the kill at a point of the run, and the checks
that every run ends as its runner reported, once, with nothing lost."""

import asyncio
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from pymongo import AsyncMongoClient

from nexus.dev.stack import SERVICES, Stack
from nexus.domain.ledger import verify_chain
from nexus.events.bus import connect
from nexus.events.envelope import decode_raw

FINAL = ("succeeded", "failed", "cancelled", "timed_out")
# "runner" is a runner forked from the worker's warm zygote (the harness waits for the zygote first);
# "zygote" is that zygote alone (the worker restarts it); "worker" takes its zygote with it.
TARGETS = ("core-api", "worker", "runner", "zygote", "nats", "ferretdb")
POINTS = ("created", "mid-run", "push")
# Writes a file (the same content in every attempt), works a little, ends; the runner commits and pushes.
SCRIPT = """
steps:
  - tool_calls:
      - name: write_file
        args: {path: "result.txt", content: "the work\\n"}
  - tool_calls:
      - name: run_command
        args: {cmd: "sleep 2"}
  - say: "done"
"""
FAULT_ENV = {
    "NEXUS_HEARTBEAT_TIMEOUT_S": "5",
    "NEXUS_SWEEP_INTERVAL_S": "0.5",
    "NEXUS_RUNNER_HEARTBEAT_S": "0.5",
    "NEXUS_REQUEUE_AFTER_S": "5",
}


@dataclass
class Outcome:
    target: str
    point: str
    run_id: str
    status: str = ""
    verdict: str = ""  # what the deciding attempt's runner reported on the stream
    attempts: int = 0
    commits: int = 0
    duplicate_launches: int = 0  # an attempt's runner started more than once (another process for the same attempt)
    redone: bool = False  # a later attempt although an earlier one had given its verdict
    forked: bool | None = None  # runner and zygote kills: the run's runner was the zygote's child at the kill
    lost_events: int = 0
    chains_verified: bool = False
    seconds_to_final: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.status in FINAL
            and self.status == self.verdict
            and self.commits <= 1
            and self.lost_events == 0
            and self.chains_verified
            and self.duplicate_launches == 0
            and not self.redone
        )


class FaultStack:
    def __init__(self, stack: Stack, api: httpx.AsyncClient, bare_repo: Path) -> None:
        self.types: dict[str, str] = {}  # event id → type@sequence, to name what was not stored
        self.stack, self.api, self.bare = stack, api, bare_repo
        self.db_name = stack.env["NEXUS_MONGODB_DB"]

    async def setup(self) -> None:
        r = await self.api.post(
            "/v1/agents",
            json={
                "name": "fault-writer",
                "system_prompt": "You write one file.",
                "tools": ["write_file", "run_command", "note", "finish"],
                "permissions": {
                    "can_commit": True,
                    "can_merge": False,
                    "commands": {"allow": ["sleep *"], "default": "deny"},
                },
                "llm": {"provider": "scripted", "script": SCRIPT},
            },
        )
        assert r.status_code == 201, r.text
        r = await self.api.post(
            "/v1/repositories", json={"name": "fault-repo", "url": str(self.bare), "default_branch": "main"}
        )
        assert r.status_code == 201, r.text

    async def create(self, title: str) -> str:
        for _ in range(600):  # core-api may be restarting from the previous case
            try:
                r = await self.api.post(
                    "/v1/tasks", json={"title": title, "assignee": "fault-writer", "repository": "fault-repo"}
                )
                if r.status_code == 201:
                    return r.json()["current_run_id"]
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError("core-api never accepted the task")

    async def run(self, run_id: str) -> dict | None:
        try:
            r = await self.api.get(f"/v1/runs/{run_id}")
            return r.json() if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    async def until(self, what: str, cond, tries: int = 1200) -> None:
        """Poll a condition; the bound is a count of polls, not an assertion on time."""
        for _ in range(tries):
            if await cond():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{what} never happened")

    def zygote_pid(self) -> int | None:
        """The worker's warm runner zygote: its child running `nexus.worker.runtimes.zygote`."""
        worker = self.stack.procs.get("worker")
        if worker is None:
            return None
        for pid in _children(worker.pid):
            try:
                if b"nexus.worker.runtimes.zygote" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
            except OSError:
                continue
        return None

    async def zygote_ready(self) -> None:
        """Until the worker says its zygote is ready to fork (its ops port's gauge)."""
        url = f"http://127.0.0.1:{self.stack.metrics_ports['worker']}/metrics"

        async def up() -> bool:
            try:
                async with httpx.AsyncClient(timeout=5) as c:
                    return "nexus_runner_zygote_up 1.0" in (await c.get(url)).text
            except httpx.HTTPError:
                return False

        await self.until("the runner zygote ready", up, tries=2400)

    def runner_pid(self, run_id: str) -> int | None:
        try:
            return int((self.stack.home / "runs" / run_id / "runner.pid").read_text())
        except (OSError, ValueError):
            return None

    def pushed(self, run_id: str) -> bool:
        out = subprocess.run(
            ["git", "--git-dir", str(self.bare), "for-each-ref", "--format=%(refname)", "refs/heads/nexus/"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return run_id in out

    async def reach(self, point: str, run_id: str, target: str) -> None:
        if point == "created" and target != "runner":
            return
        if point == "created":  # the runner: as soon as it exists
            await self.until("the runner starting", lambda: _async(self.runner_pid(run_id) is not None))
        elif point == "mid-run":
            await self.until("the run running", self._is_running(run_id))
        else:
            await self.until("the push", lambda: _async(self.pushed(run_id)), tries=4000)

    def _is_running(self, run_id: str):
        async def check() -> bool:
            run = await self.run(run_id)
            return bool(run and run["status"] in ("running", *FINAL))

        return check

    def kill_and_restart(self, target: str, run_id: str) -> None:
        s = self.stack
        if target in SERVICES:
            s.stop_service(target, signal.SIGKILL)
            s.start_service(target)
        elif target == "zygote":
            pid = self.zygote_pid()
            assert pid is not None, "the worker has no zygote to kill"
            os.kill(pid, signal.SIGKILL)  # the worker notices and starts another
        elif target == "runner":
            pid = self.runner_pid(run_id)
            if pid:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        else:
            server = next(x for x in s.servers if x.name == target)
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
            s.restart_server(target)

    async def case(self, target: str, point: str) -> Outcome:
        if target in ("runner", "zygote"):
            await self.zygote_ready()  # the runner is forked from it (the zygote restarts after a worker kill)
        run_id = await self.create(f"{target} at {point}")
        out = Outcome(target, point, run_id)
        await self.reach(point, run_id, target)
        if (
            target in ("runner", "zygote")
            and (pid := self.runner_pid(run_id)) is not None
            and (parent := _parent(pid)) is not None
        ):
            out.forked = parent == self.zygote_pid()  # None when it had already exited (after its push)
        killed_at = time.monotonic()
        self.kill_and_restart(target, run_id)

        async def final() -> bool:
            run = await self.run(run_id)
            return bool(run and run["status"] in FINAL)

        await self.until(f"run {run_id} final", final, tries=3000)
        out.seconds_to_final = round(time.monotonic() - killed_at, 1)
        await self.check(out)
        return out

    async def check(self, out: Outcome) -> None:
        run = await self.run(out.run_id) or {}
        out.status, out.attempts = run.get("status", ""), len(run.get("attempts", []))
        verdicts, stream_ids, launches = await self._stream(out.run_id)
        out.verdict = verdicts.get(run.get("attempt", 0), "")
        out.duplicate_launches = sum(max(0, len(pids) - 1) for pids in launches.values())
        out.redone = any(n > min(verdicts) for n in launches) if verdicts else False
        out.commits = self._commits(out.run_id)
        chains = [a for s in run.get("sessions") or [] for a in s.get("attempts", [])]
        out.chains_verified = bool(chains) and all(a["verified"] and verify_chain(a["changes"]).ok for a in chains)
        lost: set[str] = set(stream_ids)
        for _ in range(400):  # the last events (the worker's `exited`) may still be on their way in
            lost = set(stream_ids) - await self._stored(out.run_id)
            if not lost:
                break
            await asyncio.sleep(0.05)
        out.lost_events = len(lost)
        out.notes.extend(f"not stored: {self.types.get(i, i)}" for i in sorted(lost))

    async def _stream(self, run_id: str) -> tuple[dict[int, str], list[str], dict[int, set[str]]]:
        """Each attempt's first verdict on the stream, the ids of every event core-api must store, and
        the runner processes each attempt launched (the pids of the worker's `launched` events: the
        same runner reported twice is one, a second process for the attempt is a duplicate)."""
        nc = await connect(self.stack.nats_url or "", "faults-check", creds=self.stack.creds("tools"))
        verdicts: dict[int, str] = {}
        ids: list[str] = []
        launches: dict[int, set[str]] = {}
        try:
            sub = await nc.jetstream().subscribe(f"nexus.run.{run_id}.>", ordered_consumer=True)
            while True:
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except TimeoutError:
                    break
                env = decode_raw(msg.data)
                if env.type == "run.heartbeat":
                    continue
                ids.append(env.id)
                self.types[env.id] = f"{env.type}@{msg.metadata.sequence.stream}"
                data = json.loads(bytes(env.data))
                if env.type == "run.status" and data["status"] in FINAL:
                    verdicts.setdefault(int(data.get("attempt", 1)), data["status"])
                if env.type == "run.runtime" and data.get("phase") == "launched":
                    launches.setdefault(int(data.get("attempt", 1)), set()).add(str(data.get("detail", "")))
        finally:
            await nc.drain()
        return verdicts, ids, launches

    async def _stored(self, run_id: str) -> set[str]:
        client = AsyncMongoClient(self.stack.mongodb_url, serverSelectionTimeoutMS=5000)
        try:
            db = client[self.db_name]
            ids = {d["_id"] async for d in db["run_events"].find({"run_id": run_id}, {"_id": 1})}
            async for chunk in db["run_event_chunks"].find({"run_id": run_id}):  # one per run per ingested batch
                ids.update(e["id"] for e in json.loads(chunk["events"]))  # the events as one JSON array
            return ids
        finally:
            await client.close()

    def _commits(self, run_id: str) -> int:
        ref = subprocess.run(
            ["git", "--git-dir", str(self.bare), "for-each-ref", "--format=%(refname)", "refs/heads/nexus/"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        mine = [r for r in ref if r.endswith(run_id)]
        if not mine:
            return 0
        return int(
            subprocess.run(
                ["git", "--git-dir", str(self.bare), "rev-list", "--count", f"main..{mine[0]}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )


async def _async(value: bool) -> bool:
    return value


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and _parent(int(e.name)) == pid]


def table(outcomes: list[Outcome]) -> str:
    """fault × point → final/total, duplicates, lost events, time to final (the note's table)."""
    rows = [
        "| fault | point | final/total | status = runner's | duplicate commits | duplicate launches | redone | lost events "
        "| chains verify | time to final (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.target, o.point), []).append(o)
    for (target, point), os_ in groups.items():
        rows.append(
            f"| SIGKILL {target} | {point} | {sum(o.status in FINAL for o in os_)}/{len(os_)} "
            f"| {sum(o.status == o.verdict for o in os_)}/{len(os_)} | {sum(max(0, o.commits - 1) for o in os_)} "
            f"| {sum(o.duplicate_launches for o in os_)} | {sum(o.redone for o in os_)} "
            f"| {sum(o.lost_events for o in os_)} | {sum(o.chains_verified for o in os_)}/{len(os_)} "
            f"| {max(o.seconds_to_final for o in os_)} |"
        )
    return "\n".join(rows)


def save(outcomes: list[Outcome], path: Path) -> None:
    path.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))

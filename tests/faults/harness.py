"""The fault matrix's moving parts: a stack that owns its nats-server, FerretDB and FerretDB's PostgreSQL
(so they can be killed too), with board-sync projecting to a Plane double and telegram-gateway alerting
through a Telegram fake; runs of several shapes (shapes.py); the kill at a point of a run; and the checks
that every run ends in the final state its work reached, once, with nothing lost and nothing doubled."""

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
from nats.js.errors import KeyNotFoundError

from nexus.dev import postgres
from nexus.dev.doubles.plane import PlaneDouble
from nexus.dev.servers import Managed
from nexus.dev.stack import SERVICES, Stack
from nexus.domain.ledger import verify_chain
from nexus.events.bus import Publisher, connect
from nexus.events.catalog import CHANGE_KINDS, EVENTS_STREAM
from nexus.events.payloads import CancelRunRequest, ChatPrincipal
from nexus.worker.launcher import LAUNCH_BUCKET, claim_key
from nexus.worker.runtimes.record import read_record
from tests.faults import edges, shapes
from tests.faults.peer import Peer, claimer_pid
from tests.faults.records import FINAL, Case, Outcome, final_by, stored_ids, stream_of
from tests.telegram_gateway.fake_bot_api import FakeBotApi

CHANGES = {f"run.{k.replace('-', '_')}" for k in CHANGE_KINDS}  # the events that are session changes
# "runner" is a runner forked from the worker's warm zygote (the harness waits for the zygote first);
# "zygote" is that zygote alone (the worker restarts it); "worker" takes its zygote with it; "postgres"
# is FerretDB's PostgreSQL alone (FerretDB lives on and must get through it).
TARGETS = ("core-api", "worker", "runner", "zygote", "nats", "ferretdb", "postgres", "board-sync", "telegram-gateway")
POINTS = ("created", "mid-run", "push")
# Points that need a service to hold a window open (only for the cases at them: see FaultStack.prepare).
POINT_ENV = {
    "worker": {
        "launching": {"NEXUS_FAULT_PAUSE_AFTER_CLAIM_S": "4"},  # claimed, the runner not forked yet
        "verdict": {"NEXUS_FAULT_RUNNER_PAUSE_AFTER_VERDICT_S": "4"},  # the verdict stored, the runner not exited
    },
    # core-api stored the run's end and has not carried it out (its task moved, the end announced).
    "core-api": {"ending": {"NEXUS_FAULT_PAUSE_AFTER_END_S": "4"}},
}
# How a target is hit: SIGKILL and restart; SIGKILL, restart, SIGKILL again while it starts, restart (a
# restart loop); or SIGSTOP for longer than every ack wait and heartbeat timeout, then SIGCONT (a freeze:
# nothing restarts, the process goes on from where it was, among copies of what it held).
HOW = ("kill", "twice", "freeze")
FREEZE_S = 8.0
AGAIN_AFTER_S = 1.5  # `twice`: the second kill, this long after the first restart (while it starts)
# Points held open by the remote's own hooks: the final commit made and its push not landed ("pushing"),
# the push landed and the runner not told yet, so no verdict ("pushed").
HOOKS = {"pushing": "pre-receive", "pushed": "post-receive"}
EDGE_DURABLES = (
    "board-sync-tasks",
    "board-sync-runs",
    "telegram-gw-approvals",
    "telegram-gw-runs",
    "telegram-gw-goals",
)
FAULT_ENV = {
    "NEXUS_HEARTBEAT_TIMEOUT_S": "5",
    "NEXUS_SWEEP_INTERVAL_S": "0.5",
    "NEXUS_RUNNER_HEARTBEAT_S": "0.5",
    "NEXUS_REQUEUE_AFTER_S": "5",
    "NEXUS_ACK_WAIT_S": "3",  # board-sync's: a change a killed board-sync held comes back soon
    "NEXUS_DRIFT_INTERVAL_S": "2",
    "NEXUS_OUTAGE_BACKOFF_S": "0.5",
    "NEXUS_TELEGRAM_POLL_TIMEOUT_S": "1",
    "NEXUS_TELEGRAM_SEND_RETRY_S": "0.2",
    "NEXUS_SECRET_PLANE_KEY": "plane_api_key",
    "NEXUS_SECRET_PLANE_HOOK": "whsec_faults",
}
HOOK = """#!/bin/sh
# The fault matrix holds the push here while {gate}/hold-{name} exists.
if [ -e "{gate}/hold-{name}" ]; then
  touch "{gate}/at-{name}"
  while [ -e "{gate}/hold-{name}" ]; do sleep 0.05; done
fi
cat >/dev/null
"""


class FaultStack:
    def __init__(
        self, stack: Stack, api: httpx.AsyncClient, bare_repo: Path, plane: PlaneDouble, bot: FakeBotApi
    ) -> None:
        self.types: dict[str, str] = {}  # event id → type@sequence, to name what was not stored
        self.stack, self.api, self.bare, self.plane, self.bot = stack, api, bare_repo, plane, bot
        self.db_name = stack.env["NEXUS_MONGODB_DB"]
        self.gate = bare_repo.parent / "gate"
        self.peer = Peer(stack)
        self.frozen_worker: int | None = None
        self.point_env: dict[str, dict[str, str]] = {name: {} for name in POINT_ENV}  # as each service was started

    async def setup(self, plane_url: str) -> None:
        for agent in shapes.AGENTS:
            r = await self.api.post("/v1/agents", json=shapes.agent_body(agent))
            assert r.status_code == 201, r.text
        r = await self.api.post(
            "/v1/repositories", json={"name": "fault-repo", "url": str(self.bare), "default_branch": "main"}
        )
        assert r.status_code == 201, r.text
        r = await self.api.put("/v1/prices/scripted", json={"input_per_mtok": 2.0, "output_per_mtok": 8.0})
        assert r.status_code == 200, r.text
        r = await self.api.put(
            "/v1/board/providers/default",
            json={
                "provider": "plane",
                "plane": {
                    "base_url": plane_url,
                    "workspace_slug": self.plane.workspace,
                    "project_id": self.plane.project_id,
                    "api_key_secret": "PLANE_KEY",
                    "webhook_secret": "PLANE_HOOK",
                },
            },
        )
        assert r.status_code == 200, r.text
        r = await self.api.post(
            "/v1/chat-bindings", json={"user_id": str(edges.LEAD), "identity": "lead@example.com", "role": "lead"}
        )
        assert r.status_code == 201, r.text
        await self.bot.send_text(edges.LEAD, "/subscribe all")
        await self.bot.wait_message(edges.LEAD, "Subscribed to everything")
        self.gate.mkdir(exist_ok=True)
        for name in HOOKS.values():
            hook = self.bare / "hooks" / name
            hook.write_text(HOOK.format(gate=self.gate, name=name))
            hook.chmod(0o755)

    # ------------------------------------------------------------------ starting a case's work
    async def _post(self, path: str, body: dict | None = None, ok: tuple[int, ...] = (200, 201)) -> httpx.Response:
        """POST until core-api takes it (it may be restarting, or waiting for the bus or the database)."""
        last = ""
        for _ in range(600):
            try:
                r = await self.api.post(path, json=body)
                if r.status_code in ok:
                    return r
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            await asyncio.sleep(0.1)
        raise AssertionError(f"core-api never took POST {path}: {last}")

    async def create(self, c: Case) -> tuple[str, str, str | None]:
        """The case's work: (the run to follow, its task, its goal) — for a goal, its meta run."""
        if c.shape == "goal":
            r = await self._post(
                "/v1/goals",
                {
                    "title": c.id,
                    "meta_agent": "fault-planner",
                    "repository": "fault-repo",
                    "budget": {"usd": 5.0},
                },
            )
            goal = r.json()
            meta = await self.run(goal["meta_run_id"]) or {}
            return goal["meta_run_id"], meta.get("task_id", ""), goal["id"]
        r = await self._post(
            "/v1/tasks", {"title": c.id, "assignee": shapes.AGENT[c.shape], "repository": "fault-repo"}
        )
        return r.json()["current_run_id"], r.json()["id"], None

    async def get(self, path: str) -> dict | None:
        try:
            r = await self.api.get(path)
            return r.json() if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    async def run(self, run_id: str) -> dict | None:
        return await self.get(f"/v1/runs/{run_id}")

    async def until(self, what: str, cond, tries: int = 1200) -> None:
        """Poll a condition; the bound is a count of polls, not an assertion on time."""
        for _ in range(tries):
            if await cond():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{what} never happened")

    # ------------------------------------------------------------------ the processes
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
        record = read_record(self.stack.run_files / run_id)
        return record.pid if record is not None else None

    def pushed(self, run_id: str) -> bool:
        return any(r.endswith(run_id) for r in self._refs())

    def _refs(self) -> list[str]:
        return subprocess.run(
            ["git", "--git-dir", str(self.bare), "for-each-ref", "--format=%(refname)", "refs/heads/nexus/"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()

    def _postgres(self) -> tuple[Managed, Managed]:
        """FerretDB and the PostgreSQL under it."""
        ferret = next(x for x in self.stack.servers if x.name == "ferretdb")
        return ferret, ferret.backing[0]

    def kill(self, target: str, run_id: str) -> None:
        s = self.stack
        if target in SERVICES:
            s.stop_service(target, signal.SIGKILL)
        elif target == "zygote":
            pid = self.zygote_pid()
            assert pid is not None, "the worker has no zygote to kill"
            os.kill(pid, signal.SIGKILL)  # the worker notices and starts another
        elif target == "runner":
            if pid := self.runner_pid(run_id):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        elif target == "postgres":
            _, pg = self._postgres()
            os.killpg(pg.proc.pid, signal.SIGKILL)  # the postmaster and every backend of its group
            pg.proc.wait()
        else:
            server = next(x for x in s.servers if x.name == target)
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()

    def freeze(self, target: str, run_id: str, sig: int) -> None:
        """SIGSTOP (or SIGCONT) the target: its whole process group (a service with its children, a
        runner with its commands, a server), the zygote alone; with two workers, "worker" is the one
        that claimed the run's launch (`self.frozen_worker`)."""
        if target == "worker" and self.frozen_worker:
            os.killpg(self.frozen_worker, sig)
            return
        if target == "zygote":
            pid = self.zygote_pid()
            assert pid is not None, "the worker has no zygote to freeze"
            os.kill(pid, sig)
            return
        if target in SERVICES:
            group = self.stack.procs[target].pid
        elif target == "runner":
            group = self.runner_pid(run_id) or 0
        elif target == "postgres":
            group = self._postgres()[1].proc.pid
        else:
            group = next(x for x in self.stack.servers if x.name == target).proc.pid
        if group:
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass

    async def hit(self, c: Case, run_id: str) -> None:
        """What the case does to its targets; a cancel shape's cancel is asked while they are down."""
        if c.how == "freeze":
            self.frozen_worker = await claimer_pid(self.stack, run_id) if c.workers == 2 else None
            for t in c.targets:
                self.freeze(t, run_id, signal.SIGSTOP)
            try:
                if c.shape == "cancel":
                    await self.cancel(c.targets, run_id)
                await asyncio.sleep(FREEZE_S)
            finally:
                for t in c.targets:
                    self.freeze(t, run_id, signal.SIGCONT)
                self.release()
            return
        for t in c.targets:
            self.kill(t, run_id)
        try:
            if c.shape == "cancel":
                await self.cancel(c.targets, run_id)
        finally:
            for t in c.targets:
                self.restart(t)
            if c.how != "twice":
                self.release()
        if c.how == "twice":  # killed again while it starts (a runner: the next attempt's, once launched)
            try:
                await self.again(c, run_id)
            finally:
                self.release()

    async def again(self, c: Case, run_id: str) -> None:
        if c.target == "runner":
            first = self.runner_pid(run_id)

            async def next_runner() -> bool:
                return self.runner_pid(run_id) not in (None, first)

            await self.until("the next attempt's runner", next_runner, tries=4000)
        else:
            await asyncio.sleep(AGAIN_AFTER_S)
        for t in c.targets:
            self.kill(t, run_id)
        for t in c.targets:
            self.restart(t)

    def restart(self, target: str) -> None:
        s = self.stack
        if target in SERVICES:
            s.start_service(target)
        elif target == "postgres":
            ferret, pg = self._postgres()
            port = int(pg.url.rsplit(":", 1)[1].split("/")[0])
            log = (s.log_dir or s.home / "logs") / "ferretdb-postgres.log"
            ferret.backing[0] = postgres.start_postgres(s.home / "ferretdb" / "pg", port=port, log_path=log)
        elif target in ("nats", "ferretdb"):
            s.restart_server(target)

    async def prepare(self, c: Case) -> None:
        """The worker with the fault pauses this point needs (restarted only when they change), the push
        held at the remote's hook for the hook points, and nothing of the last case's held back."""
        want = {name: points.get(c.point, {}) for name, points in POINT_ENV.items()}
        for k in [k for k in self.stack.env if k.startswith("NEXUS_FAULT_")]:
            del self.stack.env[k]
        for env in want.values():
            self.stack.env.update(env)
        for name, env in want.items():
            if env != self.point_env[name]:
                self.stack.stop_service(name)
                self.stack.start_service(name)
                self.point_env[name] = env
                if name == "worker":
                    self.peer.stop()  # started again below with the same pauses, if the case has two
        if c.workers == 2:
            self.peer.start()
        else:
            self.peer.stop()
        for f in self.gate.iterdir():
            f.unlink()
        if hook := HOOKS.get(c.point):
            (self.gate / f"hold-{hook}").touch()
        if c.point == "projecting":  # Plane takes the run's comment and its answer is held back
            self.plane.held.clear()
            self.plane.hold_answers("POST", "/comments/")

    def release(self) -> None:
        for f in self.gate.glob("hold-*"):
            f.unlink()
        for held in self.plane.holding.values():
            held.set()
        self.plane.holding.clear()

    # ------------------------------------------------------------------ reaching the point
    async def reach(self, c: Case, run_id: str, goal_id: str | None) -> None:
        if c.point == "created" and c.target == "runner":  # as soon as it exists
            await self.until("the runner starting", lambda: _async(self.runner_pid(run_id) is not None))
        elif c.point == "ending":  # stored final, its task not moved yet (core-api pauses there)
            await self.until("the run's end stored", self._status_in(run_id, FINAL), tries=4000)
        elif c.point == "launching":
            await self.until("the launch claimed", lambda: self._claimed(run_id), tries=2400)
        elif c.point in ("mid-run", "cancel"):
            await self.until("the run running", self._status_in(run_id, ("running", *FINAL)))
        elif c.point == "approval":
            await self.until("the run waiting for approval", self._status_in(run_id, ("waiting_approval",)), 2400)
        elif c.point == "push":
            await self.until("the push", lambda: _async(self.pushed(run_id)), tries=4000)
        elif c.point in HOOKS:
            at = self.gate / f"at-{HOOKS[c.point]}"
            await self.until(f"the push held at {HOOKS[c.point]}", lambda: _async(at.exists()), tries=4000)
        elif c.point == "verdict":
            await self.until("the verdict", self._status_in(run_id, FINAL), tries=4000)
        elif c.point == "projecting":
            await self.until("the run's comment in Plane", lambda: _async(bool(self.plane.held)), tries=4000)
        elif c.point == "children":
            await self.until("a child running", lambda: self._child_running(goal_id or ""), tries=4000)

    def _status_in(self, run_id: str, statuses: tuple[str, ...]):
        async def check() -> bool:
            run = await self.run(run_id)
            return bool(run and run["status"] in statuses)

        return check

    async def _child_running(self, goal_id: str) -> bool:
        goal = await self.get(f"/v1/goals/{goal_id}") or {}
        return any(ch.get("run_status") == "running" for ch in goal.get("children", []))

    async def _claimed(self, run_id: str) -> bool:
        nc = await connect(self.stack.nats_url or "", "faults-claim", creds=self.stack.creds("tools"))
        try:
            kv = await nc.jetstream().key_value(LAUNCH_BUCKET)
            await kv.get(claim_key(run_id, 1))
            return True
        except KeyNotFoundError:
            return False
        finally:
            await nc.close()

    # ------------------------------------------------------------------ while the target is dead
    async def cancel(self, targets: list[str], run_id: str) -> None:
        """Cancel the run now, while the target is dead. Without core-api, a lead's cancel goes onto the bus
        as the gateway sends it and waits there for core-api; otherwise through the API, asked again while
        it answers that it cannot (the bus or the database out of reach)."""
        if "core-api" in targets:
            nc = await connect(self.stack.nats_url or "", "faults-cancel", creds=self.stack.creds("tools"))
            try:
                await Publisher(nc.jetstream(), "telegram-gateway").publish(
                    "core.cancel_run",
                    CancelRunRequest(run_id=run_id, principal=ChatPrincipal(user_id=str(edges.LEAD))),
                    correlation_id=run_id,
                )
            finally:
                await nc.drain()
            return
        try:  # once: without the bus or the database core-api may answer only that it cannot
            await self.api.post(f"/v1/runs/{run_id}/cancel", timeout=60)
        except httpx.HTTPError:
            pass

    async def cancelled(self, run_id: str) -> None:
        """After the restart: the cancel asked again until core-api takes it, as a client told to retry does
        (a cancel it took already, or a run it ended already, answers 409)."""
        await self._post(f"/v1/runs/{run_id}/cancel", ok=(200, 201, 202, 409))

    async def approve(self, run_id: str) -> list[str]:
        """Approve every approval the run asks for until it ends (a retried attempt asks again), each once
        its alert reached the lead, as a person would. (Approved through the API as soon as it was stored, an
        approval can be decided before its run's `waiting_approval` is ingested: it is then never announced,
        rightly — there is nothing left to ask — and its alert could not be checked.)"""
        decided: list[str] = []

        def alerted(approval_id: str) -> bool:
            return any(approval_id in m.get("text", "") and "reply_markup" in m for m in self.bot.sent(edges.LEAD))

        async def ended() -> bool:
            page = await self.get(f"/v1/approvals?run_id={run_id}&status=pending") or {"items": []}
            for a in [a for a in page["items"] if alerted(a["id"])]:
                r = await self._post(f"/v1/approvals/{a['id']}/approve", ok=(200, 409))
                if r.status_code == 200:
                    decided.append(a["id"])
            run = await self.run(run_id)
            return bool(run and run["status"] in FINAL)

        await self.until(f"run {run_id} approved and final", ended, tries=3000)
        return decided

    # ------------------------------------------------------------------ one case
    async def case(self, c: Case) -> Outcome:
        await self.prepare(c)
        repeated_before = edges.marked_repeats(self.bot)
        if {"runner", "zygote"} & set(c.targets):
            await self.zygote_ready()  # the runner is forked from it (the zygote restarts after a worker kill)
        run_id, task_id, goal_id = await self.create(c)
        out = Outcome(c.target, c.point, run_id, c.shape, c.how, c.workers, expected=shapes.VERDICT[c.shape])
        out.expected_commits = shapes.COMMITS.get(c.shape, 0)
        await self.reach(c, run_id, goal_id)
        if (
            c.target in ("runner", "zygote")
            and c.how != "freeze"
            and (pid := self.runner_pid(run_id)) is not None
            and (parent := _parent(pid)) is not None
        ):
            out.forked = parent == self.zygote_pid()  # None when it had already exited (after its push)
        killed_at = time.monotonic()
        await self.hit(c, run_id)
        if c.shape == "cancel" and "core-api" not in c.targets:  # a dead core-api's cancel is the one on the bus
            await self.cancelled(run_id)
        approvals = await self.approve(run_id) if c.shape == "approval" else []
        if goal_id is None:
            await self.until(f"run {run_id} final", self._status_in(run_id, FINAL), tries=3000)
        else:
            await self.until(f"goal {goal_id} reported", lambda: self._goal_reported(goal_id), tries=4000)
        out.seconds_to_final = round(time.monotonic() - killed_at, 1)
        await self.edges_idle()
        if goal_id is None:
            await self.check(out, out.run_id)
            run = await self.run(run_id) or {}
            problems = await self.task_and_card(task_id, run.get("status", ""), run_id)
            problems += await edges.telegram(
                self.bot, {run_id: run.get("status", "")}, approvals, gateway_killed=_gateway_killed(out)
            )
        else:
            problems = await self.check_goal(out, goal_id)
        out.edges_ok = not problems
        out.notes.extend(problems)
        if repeats := edges.marked_repeats(self.bot) - repeated_before:  # accepted after a gateway kill, but shown
            out.notes.append(f"telegram: {repeats} sent again, marked as a possible repeat")
        return out

    async def task_and_card(self, task_id: str, run_status: str, run_id: str) -> list[str]:
        """The task followed its run's end (a core-api that died between storing the end and carrying it
        out leaves that to its successor, so it may come after the run is final), and its card shows it."""
        want = shapes.TASK_STATUS.get(run_status, "")
        status = ""
        for _ in range(edges.POLLS):
            status = (await self.get(f"/v1/tasks/{task_id}") or {}).get("status", "")
            if status == want:
                break
            await asyncio.sleep(0.05)
        problems = [] if status == want else [f"task {task_id} is {status}, its run {run_status}"]
        return problems + await edges.board(self.plane, task_id, want, [run_id])

    async def edges_idle(self) -> None:
        """Until board-sync's and the gateway's durable consumers hold nothing: every event delivered
        and acknowledged, including what a killed instance held (back after its ack wait), so a doubled
        card comment or alert has been made by the time the edges are checked."""
        nc = await connect(self.stack.nats_url or "", "faults-edges", creds=self.stack.creds("tools"))
        js = nc.jetstream()

        async def idle() -> bool:
            for durable in EDGE_DURABLES:
                try:
                    info = await js.consumer_info(EVENTS_STREAM, durable)
                except Exception:  # noqa: BLE001 — the server or the durable not back yet: not idle
                    return False
                if info.num_pending or info.num_ack_pending:
                    return False
            return True

        try:
            await self.until("board-sync and the gateway idle", idle, tries=1200)
        finally:
            await nc.close()

    async def _goal_reported(self, goal_id: str) -> bool:
        goal = await self.get(f"/v1/goals/{goal_id}")
        return bool(goal and goal.get("report") is not None)

    async def check_goal(self, out: Outcome, goal_id: str) -> list[str]:
        """The goal done; its meta run and each child run checked like a run of its own (summed into
        `out`); two children, no child planned twice; each child's card and the goal's end alert once."""
        goal = await self.get(f"/v1/goals/{goal_id}") or {}
        children = goal.get("children", [])
        problems = [] if goal.get("status") == "done" else [f"goal {goal_id} is {goal.get('status')}"]
        if len(children) != 2:
            problems.append(f"goal {goal_id} has {len(children)} children")
        await self.check(out, out.run_id)
        out.expected_commits, out.commits = 1, 0
        statuses = {out.run_id: out.status}
        for ch in children:
            one = Outcome(out.target, out.point, ch["run_id"])
            await self.check(one, ch["run_id"])
            statuses[ch["run_id"]] = one.status
            out.commits = max(out.commits, one.commits)  # each child's own branch: one commit each
            out.duplicate_launches += one.duplicate_launches
            out.redone = out.redone or one.redone
            out.lost_events += one.lost_events
            out.chains_verified = out.chains_verified and one.chains_verified
            out.notes.extend(one.notes)
            if one.status != "succeeded" or one.status != one.verdict or one.commits != 1:
                problems.append(f"child run {ch['run_id']}: {one.status}/{one.verdict}, {one.commits} commits")
            problems += await self.task_and_card(ch["task_id"], one.status, ch["run_id"])
        problems += await edges.telegram(self.bot, statuses, [], goal_id, gateway_killed=_gateway_killed(out))
        return problems

    async def check(self, out: Outcome, run_id: str) -> None:
        run = await self.run(run_id) or {}
        verdicts, stream_ids, launches, ends = await stream_of(self.stack, run_id, self.types)
        # Every attempt launched without a verdict has ended (the exit a retry would follow) before the run
        # is judged. (One with a verdict may never say `exited`: its runner can end while no worker watches.)
        for _ in range(100):
            if all(n in ends or n in verdicts for n in launches):
                break
            await asyncio.sleep(0.05)
            verdicts, stream_ids, launches, ends = await stream_of(self.stack, run_id, self.types)
        lost: set[str] = set(stream_ids)
        for _ in range(400):  # the last events (the worker's `exited`) may still be on their way in
            lost = set(stream_ids) - await stored_ids(self.stack, run_id)
            if not lost:
                break
            await asyncio.sleep(0.05)
        run = await self.run(run_id) or run
        out.status, out.attempts = run.get("status", ""), len(run.get("attempts", []))
        out.verdict = verdicts.get(run.get("attempt", 0), "")
        if out.status == "cancelled" and await final_by(self.stack, run_id) == "operator":
            out.verdict = "cancelled"  # an operator's end: the runner's word is not asked (it may be dead)
        out.duplicate_launches = sum(max(0, len(pids) - 1) for pids in launches.values())
        out.redone = any(n > min(verdicts) for n in launches) if verdicts else False
        out.commits = self._commits(run_id)
        if out.shape == "approval":
            # The lead approved it: the command ran, and its file is in the work. An approval closed under a
            # live run (its action denied) still ends `succeeded` with one commit — only this tells it apart.
            out.approved_ran = shapes.APPROVED_FILE in self._pushed_files(run_id)
        chains = [a for s in run.get("sessions") or [] for a in s.get("attempts", [])]
        # A run stopped before its first change (a cancel that came at once) has no chain to verify.
        changed = any(self.types.get(i, "").split("@")[0] in CHANGES for i in stream_ids)
        out.chains_verified = (bool(chains) or not changed) and all(
            a["verified"] and verify_chain(a["changes"]).ok for a in chains
        )
        out.lost_events = len(lost)
        out.notes.extend(f"not stored: {self.types.get(i, i)}" for i in sorted(lost))

    def _pushed_files(self, run_id: str) -> list[str]:
        mine = [r for r in self._refs() if r.endswith(run_id)]
        if not mine:
            return []
        return subprocess.run(
            ["git", "--git-dir", str(self.bare), "ls-tree", "-r", "--name-only", mine[0]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()

    def _commits(self, run_id: str) -> int:
        mine = [r for r in self._refs() if r.endswith(run_id)]
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


def _gateway_killed(out: Outcome) -> bool:
    """Killed, the gateway may send an alert once more, marked as a possible repeat (edges.telegram);
    frozen, it is never restarted, and has no such excuse."""
    return "telegram-gateway" in out.target.split("+") and out.how != "freeze"


async def _async(value: bool) -> bool:
    return value


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and _parent(int(e.name)) == pid]

"""One run = one session: prepare, let the model work through the hypervisor, commit, push, merge, report."""

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from nats.js import JetStreamContext

from nexus.agent_runner import outgoing, prompt, workspace
from nexus.agent_runner.hypervisor import Hypervisor, disk, safegit
from nexus.agent_runner.hypervisor.core import APPROVALS_CAP, LEDGER_CAP
from nexus.agent_runner.hypervisor.errors import Refused
from nexus.agent_runner.hypervisor.sandbox import describe as describe_sandbox
from nexus.agent_runner.external import run_external
from nexus.agent_runner.llm import make_provider
from nexus.agent_runner.llm.base import Message, ToolSpec
from nexus.agent_runner.loop import BudgetExceeded, Outcome, RunStopped, run_loop
from nexus.agent_runner.reporter import RunReporter
from nexus.agent_runner.tree import SessionTree
from nexus.agent_runner.waiting import RunInbox
from nexus.events.permissions import RunIdentity
from nexus.domain.budgets import Cap
from nexus.domain.ids import derived_id, new_id
from nexus.domain.json_types import JsonObject
from nexus.domain.limits import MAX_BODY_BYTES
from nexus.domain.sessions import SessionState
from nexus.events.bus import Publisher
from nexus.events.payloads import (
    MAX_CHILDREN,
    ApprovalRequested,
    ChildFinished,
    ChildPlan,
    PlanChildren,
    RunConfig,
    SessionOpened,
    Usage,
)
from nexus.kernel import Kernel

log = logging.getLogger("nexus.agent_runner")
CHILDREN_TIMEOUT_S = 3600.0
MAX_PLAN_BYTES = MAX_BODY_BYTES - (64 << 10)  # the plan command's body, with room for its envelope
# Actions of the runner itself that an agent document may mark "ask" (permissions.ask).
MERGE_ASKS = ("merge", "push_default_branch")


# The model's view of each set of offered tools, made once per process: the rehearsal run makes the usual
# set's in the warm zygote, so a forked run does not decode every tool's schema again (~15 JSON Schemas,
# fresh dicts, ~0.2 ms and their page faults). Providers only read them (they encode them into requests).
_model_tools: dict[tuple[str, ...], tuple[ToolSpec, ...]] = {}


def model_tools(hv: Hypervisor) -> list[ToolSpec]:
    """The tools the session's model is shown: those its hypervisor offers."""
    offered = hv.offered()
    made = _model_tools.get(offered)
    if made is None:
        made = tuple(ToolSpec(name=t.name, description=t.description, parameters=t.parameters) for t in hv.tool_specs())
        _model_tools[offered] = made
    return list(made)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def backend(cfg: RunConfig) -> str:
    """The session's backend: the provider, or for an external CLI the CLI's name."""
    if cfg.llm.provider == "external" and cfg.llm.command:
        return cfg.llm.model if cfg.llm.model != "scripted" else Path(cfg.llm.command[0]).name
    return cfg.llm.provider


def _child_outcome(end: ChildFinished | None) -> str:
    if end is None:
        return "unfinished"
    return f"{end.status}: {end.reason}" if end.reason and end.status != "succeeded" else end.status


class RunSession:
    def __init__(
        self,
        cfg: RunConfig,
        js: JetStreamContext,
        reporter: RunReporter,
        *,
        workdir: Path,
        state_dir: Path,
        secrets: dict[str, str],
        env: dict[str, str],
        approval_timeout_s: float = 3600.0,
        nats: Callable[[], Awaitable[Any]] | None = None,
        relayed: bool = False,
        sandbox_mode: str = "auto",
        disk_budget: int = disk.BUDGET,
        git_timeout_s: float = workspace.GIT_TIMEOUT_S,
        max_changes: int = LEDGER_CAP,
        max_approvals: int = APPROVALS_CAP,
    ) -> None:
        self.cfg = cfg
        self.js = js
        # the run's own connection, made on first call: with it, the session is hosted on the agent kernel (tree.py)
        self.nats = nats
        self.relayed = relayed  # its publishes ride the worker's connection, not the one `nats` makes
        self.tree: SessionTree | None = None
        self.hv: Hypervisor | None = None
        self.opened: SessionOpened | None = None  # the session's opening report, once sent
        self.reporter = reporter
        self.workdir = workdir
        self.state_dir = state_dir
        self.secrets = secrets
        self.env = env
        self.inbox = RunInbox(js, RunIdentity(cfg.run_id, reporter.attempt, cfg.session_id, cfg.parent_session_id))
        self.children: list[ChildPlan] = []
        self.approval_timeout_s = approval_timeout_s
        self.sandbox_mode = sandbox_mode
        self.disk_budget = disk_budget
        self.max_changes = max_changes
        self.max_approvals = max_approvals
        self.rejection = ""  # set when a human rejects: the run stops with this reason
        self.stopped = ""  # set when a process limit is reached: the run stops at its next step
        self.token: str | None = None  # the repository credential: only for the clone, fetch and push
        self.rg = workspace.RunGit(
            work_tree=workdir, private=state_dir / "git", base=env, timeout_s=git_timeout_s
        )  # the git dir is runner-private
        self.trailers: dict[str, str] = {}
        self.outcome = Outcome()  # the model's (or the external CLI's) spend so far, kept when the run is stopped

    def stop(self, reason: str) -> None:
        """End the run at its next step with `reason` (the first reason given wins)."""
        self.stopped = self.stopped or reason

    def _stop_reason(self) -> str:
        return self.rejection or self.stopped or (self.hv.limit_reached() if self.hv is not None else "")

    async def _inbox(self, kind: str) -> RunInbox:
        """The run's inbox, listening for `kind` (what core-api says to it: approval decisions, children's ends)."""
        await self.inbox.start(kind)
        return self.inbox

    async def approve(self, action: str, detail: str) -> bool:
        """Pause for a human: True on approve; False on reject (and the run stops, see `rejection`);
        TimeoutError when nobody decided in time (the action is denied and the run goes on)."""
        inbox = await self._inbox("approval_decided")
        approval_id = new_id("apr")
        expires = datetime.now(UTC) + timedelta(seconds=self.approval_timeout_s)
        await self.reporter.flush()  # the request comes after what the run said before it
        await self.reporter.publisher.publish(
            "run.approval_requested",
            ApprovalRequested(
                approval_id=approval_id,
                run_id=self.cfg.run_id,
                action=self.reporter.mask(action)[:200],
                detail=self.reporter.mask(detail)[:2000],
                session_id=self.cfg.session_id,
                expires_at=expires.isoformat().replace("+00:00", "Z"),
            ),
            run_id=self.cfg.run_id,
        )
        await self.reporter.status("waiting_approval")
        # core-api's clock expires the approval at `expires`; ours is the backstop if it never says.
        decision = await inbox.decision(approval_id, self.approval_timeout_s + 5.0)
        await self.reporter.status("running")
        if decision is None or decision.decision == "expired":
            raise TimeoutError(f"approval {approval_id} expired")
        if decision.decision == "approved":
            return True
        self.rejection = (
            f"rejected by {decision.decided_by or 'an unnamed approver'}: {decision.reason or 'no reason given'}"
        )
        return False

    async def spawn(self, args: JsonObject) -> JsonObject:
        """A child in the plan, refused when the plan would pass what core-api takes: MAX_CHILDREN
        children, one bus message (the plan is sent whole, when the session finishes)."""
        if len(self.children) >= MAX_CHILDREN:
            raise Refused("too-many-children", f"a meta session plans at most {MAX_CHILDREN} children")
        title = str(args.get("title", ""))[:500] or f"child {len(self.children) + 1}"
        target_files = [str(f) for f in args.get("target_files", [])]
        agent = args.get("agent")
        child = ChildPlan(
            # The same child planned again by a retried attempt (an earlier attempt's runner died while its
            # children worked) is the same child: core-api plans a session id once, and the children's ends
            # are replayed to the new attempt. A new id per attempt would start every child again.
            session_id=derived_id(
                "ses", self.cfg.session_id, str(len(self.children)), title, *target_files, "@", str(agent or "")
            ),
            title=title,
            description=str(args.get("description", "")),
            target_files=target_files,
            agent_id=agent,
            weight=float(args.get("weight", 1.0)),
        )
        plan = PlanChildren(run_id=self.cfg.run_id, session_id=self.cfg.session_id, children=[*self.children, child])
        if len(msgspec.json.encode(plan)) > MAX_PLAN_BYTES:
            raise Refused(
                "plan-too-large",
                f"the plan would pass {MAX_PLAN_BYTES} bytes with this child; shorter descriptions, or fewer children",
            )
        self.children.append(child)
        return {"session_id": child.session_id, "target_files": child.target_files}

    async def _open_tree(self) -> SessionTree | None:
        """The session on the agent kernel, opened when the run first needs it: before it plans children
        (its inbox is where they tell it their end, and the only ones its credential lets write there)
        or tells its parent. A session that does neither keeps no kernel, no subscription and no agent
        task — a trivial run's inbox could be reached by no one but itself."""
        if self.tree is None and self.nats is not None:
            nc = await self.nats()
            self.tree = await SessionTree.open(nc, self.cfg.session_id, self._status, confirm=self.relayed)
            self.reporter.kernel = self.tree.kernel
        return self.tree

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self.inbox.started:
                await self.inbox.close()
            if self.tree is not None:
                await self.tree.close()

    def _status(self) -> JsonObject:
        hv = self.hv
        return {
            "sessionId": self.cfg.session_id,
            "runId": self.cfg.run_id,
            "changes": len(hv.session.changes) if hv else 0,
            "ledgerHash": hv.ledger_hash if hv else "",
            "finished": hv.finished is not None if hv else False,
        }

    async def _run(self) -> None:
        cfg = self.cfg
        r = self.reporter
        self.token = self.secrets.get(cfg.repo.credentials_secret) if cfg.repo and cfg.repo.credentials_secret else None
        await workspace.prepare(cfg.repo, self.rg, agent_id=cfg.agent_id, token=self.token)
        session = SessionState(
            session_id=cfg.session_id,
            project_path=str(self.workdir),
            parent_session_id=cfg.parent_session_id,
            backend=backend(cfg),
            run_id=cfg.run_id,
            created_at=_now(),
            updated_at=_now(),
        )
        self.trailers = {
            "Nexus-Run": cfg.run_id,
            "Nexus-Agent": f"{cfg.agent_id}@{cfg.agent_revision}",
            "Nexus-Session": cfg.session_id,
        }
        hv = Hypervisor(
            workspace=self.workdir,
            permissions=cfg.permissions,
            session=session,
            state_file=self.state_dir / f"{cfg.session_id}.json",
            secrets=self.secrets,
            recorder=r.change_recorder(cfg.session_id, cfg.parent_session_id),
            approver=self.approve,
            spawner=self.spawn if cfg.meta else None,
            commit_trailers=self.trailers,
            base_env=self.env,
            allowed_tools=cfg.tools or None,
            git_dir=self.rg.git_dir,
            git_seal=self.rg.ensure,  # the seal prepare took (no second read), or the owed repository's
            private_dir=self.state_dir / "hypervisor",
            sandbox_mode=self.sandbox_mode,
            disk_budget=self.disk_budget,
            max_changes=self.max_changes,
            max_approvals=self.max_approvals,
            shower=r.content,
        )
        self.hv = hv
        # The session's opening says what confines its commands (stored on the session): one event, not a
        # log line beside it. The runner's own log still says it in words.
        log.info("commands are confined by %s", describe_sandbox(hv.sandbox))
        self.opened = r.session_report(
            cfg.session_id, str(self.workdir), cfg.parent_session_id, backend(cfg), sandbox=hv.sandbox
        )
        await r.session(self.opened)
        try:
            outcome = await (self._external(hv) if cfg.llm.provider == "external" else self._model(hv))
        except BudgetExceeded as exc:
            # A clean stop: the work so far is committed and pushed on the run's branch, the ledger sealed.
            await r.log(exc.detail, level="warning")
            await self._end(hv, "failed", str(exc), self._usage(self.outcome), keep_work=True)
            return
        except RunStopped as exc:
            await self._end(hv, "failed", str(exc), self._usage(self.outcome))
            return
        if cfg.meta and self.children:
            outcome.summary, unplanned = await self._run_children(hv, outcome.summary)
            if unplanned:  # part of the plan never ran: the meta session did not reach what it planned
                reason = f"{len(unplanned)} of {len(self.children)} children not planned: {unplanned[0]}"
                await self._end(hv, "failed", reason, self._usage(outcome), summary=outcome.summary, keep_work=True)
                return
        await self._end(hv, "succeeded", "", self._usage(outcome), summary=outcome.summary)

    def closing(self, verdict: str) -> SessionOpened | None:
        """The session's end for a run ending with `verdict`: completed when it succeeded, else error;
        None when it never opened (nothing to close)."""
        if self.opened is None:
            return None
        return msgspec.structs.replace(self.opened, status="completed" if verdict == "succeeded" else "error")

    @staticmethod
    def _usage(outcome: Outcome) -> Usage:
        return Usage(
            input_tokens=outcome.input_tokens, output_tokens=outcome.output_tokens, cost_usd=round(outcome.cost_usd, 6)
        )

    async def _model(self, hv: Hypervisor) -> Outcome:
        cfg = self.cfg
        provider = make_provider(cfg.llm, secrets=self.secrets, variables=prompt.variables(cfg))
        tools = model_tools(hv)
        messages = [
            Message(role="system", content=prompt.system_message(cfg)),
            Message(role="user", content=prompt.task_message(cfg)),
        ]
        try:
            budget = (cfg.budget or Cap()).tightest(Cap(usd=cfg.limits.max_cost_usd))
            return await run_loop(
                provider,
                hv,
                self.reporter,
                messages,
                tools,
                cfg.limits,
                stop=self._stop_reason,
                budget=budget,
                price=cfg.price,
                out=self.outcome,
            )
        finally:
            await provider.aclose()

    async def _external(self, hv: Hypervisor) -> Outcome:
        """An external coding CLI is the brain: one more kernel agent of this session's tree."""
        tree = await self._open_tree()
        kernel = tree.kernel if tree is not None else Kernel(id=f"runner-{self.cfg.session_id}")
        try:
            # The CLI's HOME is an empty private directory: never the runner's, never the workspace.
            env = {**self.env, "HOME": str(safegit.private_dir(self.state_dir / "cli-home"))}
            return await run_external(
                self.cfg,
                kernel,
                hv,
                self.reporter,
                workdir=self.workdir,
                env=env,
                rg=self.rg,
                stop=self._stop_reason,
                out=self.outcome,
            )
        finally:
            if self.tree is None:
                await kernel.shutdown("drop", 2.0)

    async def _run_children(self, hv: Hypervisor, summary: str) -> tuple[str, list[str]]:
        """Write meta-plan.json, hand the plan to core-api, wait for every child, summarise; with the
        reasons core-api gave for the children it refused to plan, each also in the ledger."""
        plan = {
            "metaSessionId": self.cfg.session_id,
            "goalId": self.cfg.task.goal_id if self.cfg.task else None,
            "children": [
                {"sessionId": c.session_id, "title": c.title, "targetFiles": c.target_files} for c in self.children
            ],
        }
        await hv.runner_call("write_file", {"path": "meta-plan.json", "content": json.dumps(plan, indent=2) + "\n"})
        tree = await self._open_tree()  # subscribed before the plan below makes any child exist
        if tree is not None:
            self.inbox.on_child = lambda end: tree.child_finished(msgspec.to_builtins(end))
        inbox = await self._inbox("child_finished")
        await Publisher(self.js, "agent-runner").publish(
            "core.plan_children",
            PlanChildren(run_id=self.cfg.run_id, session_id=self.cfg.session_id, children=self.children),
            correlation_id=self.cfg.run_id,
            run_id=self.cfg.run_id,
        )
        await self.reporter.log(f"planned {len(self.children)} child sessions; waiting for them")
        ids = {c.session_id for c in self.children}
        if tree is not None:
            # Children in other runner processes tell this session's kernel agent over NATS; core-api's
            # durable `run.child_finished` feeds the same agent (and covers a child that crashed).
            ends = await tree.agent.wait_for(ids, CHILDREN_TIMEOUT_S)
            done = {
                s: msgspec.convert({k: v for k, v in e.items() if k in ChildFinished.__struct_fields__}, ChildFinished)
                for s, e in ends.items()
            }
            heard = len(tree.agent.heard_over_kernel & ids)
            await self.reporter.log(f"{heard} of {len(ids)} children reported their end over the agent kernel")
        else:
            done = await inbox.children_done(ids, CHILDREN_TIMEOUT_S)
        unplanned = []
        for c in self.children:
            end = done.get(c.session_id)
            if end is not None and not end.run_id:  # core-api never made it a run
                unplanned.append(f"{c.title} ({c.session_id}): {end.reason}")
                await hv.refuse("spawn_child", "not-planned", unplanned[-1])
        lines = [f"- {c.title} ({c.session_id}): {_child_outcome(done.get(c.session_id))}" for c in self.children]
        await hv.runner_call("note", {"message": "children finished:\n" + "\n".join(lines)})
        return (summary + "\n\n" if summary else "") + "Children:\n" + "\n".join(lines), unplanned

    async def _has_changes(self, hv: Hypervisor) -> bool:
        """Whether the workspace holds work to commit. A run without a repository starts from an empty
        work tree that only the hypervisor's tools write, each write recorded: with nothing recorded
        there is nothing to commit, and no `git status` process is started to find that out. An
        external CLI writes the work tree itself, so its runs always ask git."""
        if self.cfg.repo is None and self.cfg.llm.provider != "external" and not hv.session.changes:
            return False
        return await workspace.has_changes(self.rg)

    async def _end(
        self, hv: Hypervisor, status: str, reason: str, usage: Usage | None, summary: str = "", keep_work: bool = False
    ) -> None:
        """`keep_work`: a failed run whose work so far is still committed and pushed (a budget stop)."""
        cfg = self.cfg
        commit_sha = ""
        # The model's final text (and a reason quoting what it did) goes into the commit, the verdict's event
        # and the parent's inbox: masked once, here, before any of them.
        summary, reason = self.reporter.mask(summary), self.reporter.mask(reason)
        outcome_status, stop_reason = status, reason
        if keep_work:
            status = "succeeded"  # through the commit and push below; the verdict stays `outcome_status`
            kept = f"; the work so far is on {cfg.repo.branch}" if cfg.repo else ""
            summary = summary or f"stopped: {reason}{kept}"
        try:
            dirty = status == "succeeded" and cfg.permissions.can_commit and await self._has_changes(hv)
        except workspace.GitRefused as exc:  # the agent's doing (a nested repository, a tree git takes hours on)
            await hv.refuse("commit", exc.reason, str(exc))
            status, reason, dirty = "failed", f"commit refused: {exc}", False
        if dirty:
            title = cfg.task.title if cfg.task else cfg.task_id
            message = outgoing.without_trailers(f"{title}\n\n{summary}".strip()[:4000]) or "Nexus run"
            result = await hv.runner_call("git_commit", {"message": message})
            if not result.ok:
                status, reason = "failed", f"commit refused: {result.error}"
        if status == "succeeded" and cfg.repo and cfg.permissions.can_commit:
            refused = await self._push(hv, cfg.repo.branch, provenance=True)
            if refused:
                status, reason = "failed", refused
            else:
                commit_sha = await workspace.head(self.rg)
                if cfg.permissions.can_merge and not keep_work:  # stopped work is never merged
                    refused = await self._merge(hv)
                    if refused:
                        status, reason = "failed", refused
        if keep_work:
            if status != "succeeded":  # the commit or push was refused: said in the log, the stop's reason stands
                await self.reporter.log(f"the work so far could not be kept: {reason}", level="warning")
            status, reason = outcome_status, stop_reason
        hv.seal_state()
        await self.reporter.status(
            status,
            reason=reason,
            summary=summary[:8000],
            branch=cfg.repo.branch if cfg.repo else "",
            commit_sha=commit_sha,
            ledger_hash=hv.ledger_hash,
            usage=usage,
            session=self.closing(status),  # the session ends with the verdict, in its event
        )
        if cfg.parent_session_id and (tree := await self._open_tree()) is not None:
            await tree.tell_parent(
                cfg.parent_session_id,
                {
                    "run_id": cfg.run_id,
                    "task_id": cfg.task_id,
                    "status": status,
                    "summary": summary[:2000],
                    "reason": reason,
                },
            )

    async def _push(self, hv: Hypervisor, branch: str, *, provenance: bool) -> str:
        """Push HEAD to `branch` unless what goes out holds a secret (the canary) or a commit the
        hypervisor did not make. Returns "" when pushed, else why not (recorded in the ledger)."""
        try:
            why = await outgoing.find_leak(self.rg, self.secrets)
            if not why and provenance:
                why = await outgoing.check_provenance(self.rg, hv.session.changes, self.trailers)
            if why:
                await hv.refuse(
                    "push", "secret-in-push" if "secret:" in why else "provenance", f"nothing pushed to {branch}: {why}"
                )
                return f"push refused: {why}"
            await workspace.push(self.rg, branch, self.token)
        except workspace.GitRefused as exc:  # a check or the push itself ended at its bound
            await hv.refuse("push", exc.reason, f"{branch} not updated: {exc}")
            return f"push refused: {exc}"
        return ""

    async def _merge(self, hv: Hypervisor) -> str:
        """Merge the run's branch into the target branch (can_merge, and approved where the agent asks
        for it). Returns "" when merged, else why not — which fails the run: a human said no."""
        repo = self.cfg.repo
        assert repo is not None
        detail = f"merge {repo.branch} into {repo.target_branch} of {repo.url}"
        for action in MERGE_ASKS:
            if action in self.cfg.permissions.ask:
                refused = await hv.gate(action, detail)
                if refused:
                    return self.rejection or f"{action} not approved: {refused}"
        try:
            merged = await workspace.merge_into(self.rg, repo.target_branch, self.token)
        except workspace.GitError as exc:
            return f"merge into {repo.target_branch} failed: {exc}"
        refused = await self._push(hv, repo.target_branch, provenance=False)
        if refused:
            return refused
        await self.reporter.log(f"merged {repo.branch} into {repo.target_branch} at {merged}")
        return ""

"""An external coding CLI as the brain of a run, attached to the session tree through a kernel bridge.

An agent whose `llm.provider` is `external` names a command (`llm.command`, an argv). The runner
starts it as a bridge child (libs/kernel/bridge: NDJSON over stdin/stdout, proto/bridge/README.md)
in the workspace, with the scrubbed environment and no secrets, and it becomes one more kernel agent
of the run, `<session>-cli`, beside the session's own agent and the hypervisor's, `<session>-hv`.
Neither is exposed over NATS: only the CLI, in this process's kernel, can drive the hypervisor.

The conversation (payloads of kernel Messages, documented in proto/bridge/README.md):
- runner -> CLI, Command: `{"event": "start", "hypervisor": "<session>-hv", "session_id", "run_id",
  "system": <system prompt with skills and memory>, "task": <task text>, "tools": [<tool specs>],
  "limits": {...}, "budget": {"usd", "tokens"}}` (what the run may spend: its goal's share and the
  agent's `max_cost_usd`; a measure left out is uncapped).
- CLI -> hypervisor, Query: `{"tool": NAME, "arguments": {...}}` -> Response `{"ok", "output", "error"}`.
  Each call is one step of the run (the agent's `max_steps`), checked, confined, recorded and
  streamed exactly like a model's tool call; a refusal comes back as `ok: false` with the reason.
- CLI -> hypervisor, Event `{"event": "usage", "input_tokens", "output_tokens", "cost_usd", "model"}`:
  the CLI's own model spend, accounted like a provider's (bound by `max_tokens` and the budget: spending
  past either ends the run, the budget's as `budget_exceeded` with the work kept), published as one
  `run.llm` event per model with its next call (or its end).
The session ends when the CLI calls `finish` (it is then asked to shut down) or exits: 0 is a
success, anything else before `finish` fails the run with the exit code.

The CLI is the model's hands: whatever the model steers it to run, it runs as its own process. So it is
confined like an agent's command (`_confined`): the hypervisor's sandbox (bwrap, Landlock or none), the
workspace read-write, its program and the files its argv names read-only, a HOME of its own, the network
its agent's commands get (`commands.network`, behind the same wall), the run's wall clock as its CPU time.
Unconfined it read the runner's environment in /proc (the run's NATS credential, every secret) and the
session's state file, and wrote anywhere the runner could.
"""

import asyncio
import logging
import os
import shutil
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any, cast

import msgspec

from nexus.agent_runner import prompt, workspace
from nexus.agent_runner.hypervisor import Hypervisor, changeset, commands, netwall, sandbox
from nexus.agent_runner.loop import BudgetExceeded, LimitReached, Outcome, RunStopped
from nexus.agent_runner.reporter import RunReporter
from nexus.domain.budgets import BUDGET_EXCEEDED, Cap, Spend
from nexus.domain.json_types import JsonObject
from nexus.domain.sessions import FileWriteChange
from nexus.events.payloads import RunConfig
from nexus.kernel import Kernel, Message, MessageKind
from nexus.kernel.bridge import BridgeAgent, spawn_bridge

log = logging.getLogger("nexus.agent_runner.external")
REGISTER_TIMEOUT_S = 30.0
MAX_REPORTED = 1 << 53  # the largest count a usage report may say (an event's integer, a float's exact one)
MAX_MODELS_PER_REPORT = 8  # models named apart in one step's spend; the rest is the agent's model's


class HypervisorAgent:
    """The kernel agent through which the CLI acts: one tool call per Query, in order."""

    def __init__(
        self,
        agent_id: str,
        cli_id: str,
        hv: Hypervisor,
        reporter: RunReporter,
        cfg: RunConfig,
        stop: Any,
        out: Outcome | None = None,
    ) -> None:
        self.id = agent_id
        self.name = f"hypervisor {cfg.session_id}"
        self.cli_id = cli_id
        self.hv = hv
        self.reporter = reporter
        self.limits = cfg.limits
        self.model = cfg.llm.model
        self.stop = stop  # a zero-argument callable: a reason when a human stopped the run
        self.outcome = out if out is not None else Outcome()
        self.ended = asyncio.Event()
        self.reason = ""  # why the run must stop (a limit, a rejection), set with `ended`
        self.limit_reached = False
        # Why the CLI's processes must end (a cap of its sandbox met), or "": asked before each call too, so a
        # call right after a fork bomb or a memory hog ends the run whatever the watch's poll saw.
        self.cap_met: Callable[[], Awaitable[str]] | None = None
        self._unreported: dict[str, list[float]] = {}  # model: [input, output tokens, cost] not yet published
        # What the run may spend (its goal's share, the agent's `max_cost_usd`), as for a model the runner calls.
        # The CLI reports its spend after the fact: spending past it ends the run (its work kept).
        self.budget = (cfg.budget or Cap()).tightest(Cap(usd=cfg.limits.max_cost_usd))
        self.over_budget = ""

    def _end(self, reason: str = "", *, limit: bool = False) -> None:
        if not self.reason:
            self.reason, self.limit_reached = reason, limit
        self.ended.set()

    async def handle(self, message: Message) -> Message | None:
        if message.from_ != self.cli_id:
            log.warning("hypervisor %s ignores a message from %r", self.id, message.from_)
            return None
        payload = message.payload if isinstance(message.payload, dict) else {}
        if message.kind == MessageKind.EVENT:
            if payload.get("event") == "usage":
                await self._usage(payload)
            return None
        if message.kind != MessageKind.QUERY:
            return None
        return message.reply(self.id, await self._call(payload))

    async def _call(self, payload: JsonObject) -> JsonObject:
        tool, arguments = payload.get("tool"), payload.get("arguments", {})
        if self.ended.is_set():
            return {"ok": False, "output": "", "error": f"the session is over: {self.reason or 'finished'}"}
        if self.cap_met is not None and (reason := await self.cap_met()):
            self._end(reason, limit=True)
            return {"ok": False, "output": "", "error": reason}
        out = self.outcome
        if out.steps >= self.limits.max_steps:
            self._end(f"step limit of {self.limits.max_steps} reached", limit=True)
            return {"ok": False, "output": "", "error": self.reason}
        await self.report_usage()  # the spend before this call, published before it
        out.steps += 1
        self.reporter.step = out.steps
        # Any name and arguments: what is no string or object is refused and recorded by the hypervisor.
        result = await self.hv.call(tool, arguments)  # type: ignore[arg-type]
        await self.reporter.tool(tool, result.ok, result.error)  # masked, and a string, there
        if reason := self.stop():
            self._end(reason)
        elif self.hv.finished is not None:
            out.summary = self.hv.finished
            self._end()
        return cast(JsonObject, msgspec.to_builtins(result))  # a ToolResult struct encodes as an object

    async def _usage(self, payload: JsonObject) -> None:
        """The CLI's model spend, counted at once (`max_tokens`) and published with its next call
        (`report_usage`)."""
        try:
            inp, outp = int(payload.get("input_tokens", 0)), int(payload.get("output_tokens", 0))
            cost = float(payload.get("cost_usd", 0.0))
        except (TypeError, ValueError, OverflowError):
            log.warning("hypervisor %s: a usage event with non-numeric fields was ignored", self.id)
            return
        # Counts no event can carry (past 2^53, negative) or no budget can add (NaN, infinite) are the
        # CLI's lies: held to what a report can say, so the limits below still see them.
        inp, outp = min(max(inp, 0), MAX_REPORTED), min(max(outp, 0), MAX_REPORTED)
        cost = min(cost, float(MAX_REPORTED)) if cost > 0 else 0.0  # NaN is not > 0
        out = self.outcome
        out.input_tokens += inp
        out.output_tokens += outp
        out.cost_usd += cost
        model = str(payload.get("model") or self.model)
        if model not in self._unreported and len(self._unreported) >= MAX_MODELS_PER_REPORT:
            model = self.model
        spent = self._unreported.setdefault(model, [0, 0, 0.0])
        spent[0], spent[1], spent[2] = spent[0] + inp, spent[1] + outp, spent[2] + cost
        if out.input_tokens + out.output_tokens > self.limits.max_tokens:
            self._end(
                f"token limit of {self.limits.max_tokens} reached ({out.input_tokens + out.output_tokens} used)",
                limit=True,
            )
        elif _past(self.budget, out.spent) and not self.reason:
            self.over_budget = (
                f"budget exceeded by the external CLI: spent {out.spent.tokens} tokens / {out.spent.usd:.6f} USD, "
                f"budget {'-' if self.budget.tokens is None else self.budget.tokens} tokens / "
                f"{'-' if self.budget.usd is None else self.budget.usd} USD"
            )
            self._end(BUDGET_EXCEEDED)

    async def report_usage(self) -> None:
        """The spend the CLI reported since its last call, one `run.llm` event per model. Each report used to be
        an event (a bus message, a database write): a CLI reporting in a loop published without end, as no
        change of the ledger binds a report and a report of no tokens reaches no limit."""
        pending, self._unreported = self._unreported, {}
        for model, (inp, outp, cost) in pending.items():
            await self.reporter.llm(
                step=self.outcome.steps,
                provider="external",
                model=model,
                input_tokens=int(inp),
                output_tokens=int(outp),
                cost_usd=float(cost),
                stop_reason="",
                tool_calls=[],
                text="",
            )


async def run_external(
    cfg: RunConfig,
    kernel: Kernel,
    hv: Hypervisor,
    reporter: RunReporter,
    *,
    workdir: Path,
    env: dict[str, str],
    rg: workspace.RunGit,
    stop: Any = lambda: "",
    out: Outcome | None = None,
) -> Outcome:
    """Run the CLI to its end. Returns the outcome; raises RunStopped (or LimitReached, BudgetExceeded) when the
    run fails. `out` keeps the CLI's spend when the run is stopped (the run's end reports it)."""
    command = list(cfg.llm.command or [])
    hv_id, cli_id = f"{cfg.session_id}-hv", f"{cfg.session_id}-cli"
    agent = HypervisorAgent(hv_id, cli_id, hv, reporter, cfg, stop, out)
    # A tool call may wait for a human's approval or a long command: the wall clock bounds it, not the kernel.
    kernel.spawn(agent, remote=False, handle_timeout=float(cfg.limits.wall_clock_s))
    # The work tree as the CLI starts, summed off the loop: its disk budget's watch starts from it.
    before = await asyncio.to_thread(changeset.snapshot, hv.ws.root, hv.in_tree_git)
    hv.disk.observe(await asyncio.to_thread(hv.disk_total, before))
    limits = sandbox.Limits(cpu_s=int(cfg.limits.wall_clock_s) + 5, file_size=min(sandbox.FILE_BYTES, hv.disk.left()))
    # else the disk budget is counted used up: the CLI's writes are refused anyway
    disk_guard = hv.disk.guard(len(before.entries)) if before.complete else None
    try:
        confined = _confined(cfg, hv, command, env, limits)
    except OSError as exc:  # a CLI that cannot be found ends the run with why
        raise RunStopped(f"external CLI {os.path.basename(command[0])} did not start: {exc}") from exc
    try:
        return await _attached(cfg, kernel, hv, agent, reporter, confined, limits, disk_guard, workdir=workdir, rg=rg)
    finally:
        await asyncio.to_thread(confined.cleanup)  # its cgroups and private HOME, of any size: off the loop


def _confined(
    cfg: RunConfig, hv: Hypervisor, command: list[str], env: dict[str, str], limits: sandbox.Limits
) -> sandbox.Prepared:
    """The CLI in the sandbox the hypervisor gives commands: what it may read is its program and the files
    its argv names (the agent document's, not the model's), the system and the workspace."""
    program = shutil.which(command[0], path=env.get("PATH")) if "/" not in command[0] else command[0]
    if not program or not os.access(program, os.X_OK):
        raise FileNotFoundError(f"no executable {command[0]!r}")
    named = [a for a in command[1:] if os.path.isabs(a) and os.path.isfile(a)]
    policy = cfg.permissions.commands
    spec = sandbox.Spec(
        workspace=hv.ws.root,
        network=policy.network,
        ports=netwall.ports(policy.ports),
        programs=[os.path.abspath(program), *named],
        limits=limits,
        home=env.get("HOME"),
    )
    return sandbox.prepare(hv.sandbox, [os.path.abspath(program), *command[1:]], env, spec)


async def _attached(
    cfg: RunConfig,
    kernel: Kernel,
    hv: Hypervisor,
    agent: "HypervisorAgent",
    reporter: RunReporter,
    confined: sandbox.Prepared,
    limits: sandbox.Limits,
    disk_guard: commands.Guard | None,
    *,
    workdir: Path,
    rg: workspace.RunGit,
) -> Outcome:
    command = list(cfg.llm.command or [])
    hv_id, cli_id = agent.id, agent.cli_id
    try:
        await spawn_bridge(
            kernel,
            confined.argv,
            id=cli_id,
            remote=False,
            cwd=str(workdir),
            env=confined.env,
            own_group=True,
            preexec=confined.preexec,
            register_timeout=REGISTER_TIMEOUT_S,
        )
    except Exception as exc:  # a CLI that cannot start ends the run with why
        raise RunStopped(f"external CLI {os.path.basename(command[0])} did not start: {exc}") from exc
    bridge = kernel.agent(cli_id)
    assert isinstance(bridge, BridgeAgent) and bridge.pipes is not None
    exited = bridge.pipes.exited
    await reporter.log(f"external CLI {os.path.basename(command[0])} attached as kernel agent {cli_id}")
    await kernel.send(
        Message(
            from_=hv_id,
            to=cli_id,
            kind=MessageKind.COMMAND,
            payload={
                "event": "start",
                "hypervisor": hv_id,
                "session_id": cfg.session_id,
                "run_id": cfg.run_id,
                "system": prompt.system_message(cfg),
                "task": prompt.task_message(cfg),
                "tools": [msgspec.to_builtins(t) for t in hv.tool_specs(cfg.tools or None)],
                "limits": msgspec.to_builtins(cfg.limits),
                "budget": msgspec.to_builtins(agent.budget),
            },
        )
    )
    pid = bridge.pipes.transport.get_pid() if bridge.pipes.transport is not None else None
    guards = (commands.cap_guards(confined, pid) if pid is not None else []) + ([disk_guard] if disk_guard else [])
    agent.cap_met = _cap_met(guards, limits)
    ended = asyncio.ensure_future(agent.ended.wait())
    watch = asyncio.ensure_future(_watch_caps(agent, agent.cap_met))
    try:
        await asyncio.wait([ended, exited], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]  # a bool and an int future; typeshed wants one type
    finally:
        ended.cancel()
        watch.cancel()
    if reason := await agent.cap_met():  # met between the last poll and the CLI's end: its counters keep it
        agent._end(reason, limit=True)
    await agent.report_usage()  # what it spent after its last call
    if cli_id in kernel:
        await kernel.stop(cli_id)  # asks the CLI to shut down; terminates it after a grace
    await kernel.stop(hv_id)
    code = exited.result() if exited.done() else None
    if agent.over_budget and agent.reason == BUDGET_EXCEEDED:
        raise BudgetExceeded(agent.over_budget)  # a clean stop, as a model's: the work so far is kept
    if agent.reason:
        raise (LimitReached if agent.limit_reached else RunStopped)(agent.reason)
    if hv.finished is None and code != 0:
        raise RunStopped(f"external CLI exited with code {code} before it called finish")
    outcome = agent.outcome
    outcome.summary = hv.finished or outcome.summary
    await _note_unrecorded(hv, rg)
    return outcome


def _past(cap: Cap, spent: Spend) -> bool:
    """Spent more than the cap allows (spending it exactly is within it: the CLI may still finish)."""
    return (cap.usd is not None and spent.usd > cap.usd) or (cap.tokens is not None and spent.tokens > cap.tokens)


def _cap_met(guards: list[commands.Guard], limits: sandbox.Limits) -> Callable[[], Awaitable[str]]:
    """Why the CLI must end for a cap of its sandbox, or "": a fork past its processes, its processes' memory
    together, its writes past the disk budget (its cgroups' counters, or its process tree where no cgroup
    holds a cap, and the disk's watch, as for a command)."""
    met = {
        "pids": f"ran more than {limits.processes} processes at once",
        "memory": f"used more than {limits.memory >> 20} MiB of memory together",
        "disk": "wrote past the run's disk budget",
    }

    async def check() -> str:
        cap = await commands.first_reached(guards)
        return f"the external CLI {met.get(cap, cap)}; it was ended" if cap else ""

    return check


async def _watch_caps(agent: HypervisorAgent, cap_met: Callable[[], Awaitable[str]]) -> None:
    """The caps watched while the CLI runs, as a command's are. Unwatched, a fork the cgroup refused was
    the CLI's to notice, and a CLI filling the disk went on until its run's wall clock."""
    while not agent.ended.is_set():
        await asyncio.sleep(commands.CAP_POLL_S)
        if reason := await cap_met():
            agent._end(reason, limit=True)
            return


async def _note_unrecorded(hv: Hypervisor, rg: workspace.RunGit) -> None:
    """A CLI is a process of its own: it could write files without asking the hypervisor. What the
    commit would carry that no write_file/edit recorded is named in the ledger before the commit."""
    try:
        listed = await workspace.git(rg, "ls-files", "-z", "--modified", "--deleted", "--others", "--exclude-standard")
    except workspace.GitError:
        return  # no repository: nothing is committed
    written = {c.rel_path for c in hv.session.changes if isinstance(c, FileWriteChange)}
    unrecorded = sorted({p for p in listed.split("\0") if p and p not in written})
    if unrecorded:
        shown = ", ".join(unrecorded[:50]) + (f" and {len(unrecorded) - 50} more" if len(unrecorded) > 50 else "")
        await hv.runner_call(
            "note", {"message": f"changed by commands or by the CLI outside the hypervisor's writes: {shown}"}
        )

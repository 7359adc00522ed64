"""Commands: parsed like a POSIX shell would (no shell runs them), decided by the agent's command
policy, confined by the sandbox, their output masked and bounded."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Annotated

from nexus.agent_runner.hypervisor import changeset, cmdparse, commands, disk, netwall, sandbox, shown
from nexus.agent_runner.hypervisor.errors import Refused
from nexus.agent_runner.hypervisor.registry import tool
from nexus.agent_runner.hypervisor.secrets import UnknownSecret
from nexus.agent_runner.hypervisor.state import now_iso
from nexus.agent_runner.hypervisor.tools import MAX_COMMAND_CHARS, MAX_PATH_CHARS, Args, Doc, ToolResult
from nexus.domain.sessions import CommandRunChange, FileWriteChange
from nexus.events.payloads import CommandOutput

if TYPE_CHECKING:
    from nexus.agent_runner.hypervisor.core import Hypervisor


class RunCommandArgs(Args):
    cmd: Annotated[
        str,
        Doc(
            max_length=MAX_COMMAND_CHARS,
            description="A command line, split like a POSIX shell would split it but run WITHOUT a shell "
            "(no pipes, redirection, globbing or $VARS). Use ${secret:NAME} to pass a secret.",
        ),
    ]
    timeout_s: (
        Annotated[float, Doc(gt=0, description="Seconds before the command is killed (capped by policy).")] | None
    ) = None


def _cap_met(hv: Hypervisor, cap: str, limits: sandbox.Limits, code: int) -> Refused:
    if cap == "disk":
        return hv.disk.refusal(
            f"the command wrote past the run's disk budget, or where no walk sees; it was ended (exit code {code})"
        )
    if cap == "pids":
        return Refused(
            "process-limit",
            f"the command tried to run more than {limits.processes} processes at once (a fork bomb?); the "
            f"sandbox refused the rest and ended it (exit code {code}); its file changes are recorded",
        )
    return Refused(
        "memory-limit",
        f"the command's processes used more than {limits.memory >> 20} MiB together; the sandbox ended it "
        f"(exit code {code}); its file changes are recorded",
    )


@tool("run_command", RunCommandArgs, "Run a command in the workspace under the agent's command policy.")
async def run_command(hv: Hypervisor, args: RunCommandArgs) -> ToolResult:
    policy = hv.permissions.commands
    template = commands.parse(args.cmd)
    ctx = cmdparse.Context(hv.ws.root, hv.cmd_env.get("PATH", ""))
    plan = cmdparse.analyze(template, ctx)
    if hv.repository_outside and any("git" in (layer.name, layer.real) for layer in plan.layers):
        if os.path.lexists(os.path.join(hv.ws.root, ".git")):
            # The run's repository lives outside the workspace: a .git here is the agent's own making (a
            # pointer a command wrote without naming it), and git would read its config — filters, drivers.
            raise Refused(
                "git-internals", "the workspace holds a .git entry the run's repository did not put there; git refused"
            )
    decision, why = commands.decide(args.cmd, plan.layers, policy, hv.permissions.ask)
    if decision == "deny":
        raise Refused("policy-deny", f"the command policy denies it ({why})")
    try:
        secret_env = {name: hv.secrets.substitute(value) for name, value in plan.env.items()}
    except UnknownSecret as exc:
        raise Refused("unknown-secret", f"no secret named {exc.name}") from None
    if decision == "ask":
        await hv.ask("command", args.cmd)
    for entry, rel in cmdparse.approvals(plan.writes, hv.permissions.ask):
        await hv.ask(entry, rel)
    timeout = min(args.timeout_s, policy.timeout_s) if args.timeout_s else policy.timeout_s
    hv.rooms()  # the command's HOME exists before the sandbox decides whether to bind it
    skip = hv.in_tree_git
    before = await asyncio.to_thread(changeset.snapshot, hv.ws.root, skip)
    only_rm = {layer.real for layer in plan.layers} == {"rm"}
    if not before.complete and not only_rm:
        raise Refused(
            "workspace-too-large",
            f"the workspace cannot be walked whole: {before.why}; what a command changes could not "
            "be recorded, so only rm runs until files are removed",
        )
    hv.disk.observe(await asyncio.to_thread(hv.disk_total, before))
    if hv.disk.full() and not only_rm:
        raise hv.disk.refusal("the budget is used up")
    spec = sandbox.Spec(
        workspace=hv.ws.root,
        network=policy.network,
        ports=netwall.ports(policy.ports),
        programs=plan.programs,
        # No file of the command grows past what is left of the run's disk budget.
        limits=sandbox.Limits(cpu_s=int(timeout) + 5, file_size=min(sandbox.FILE_BYTES, hv.disk.left())),
        home=hv.env.get("HOME"),
    )
    longest = max((len(v.encode()) for v in hv.secrets.values), default=0)
    outcome = await commands.execute(
        plan.argv,
        cwd=hv.ws.root,
        env={**hv.cmd_env, **secret_env},
        timeout_s=timeout,
        max_output=policy.max_output_bytes,
        confine=(hv.sandbox, spec),
        slack=longest,
        guard=hv.disk.guard(len(before.entries)) if before.complete else None,  # else only rm runs, and adds nothing
    )
    if before.complete:
        changed, after = await _record_changes(hv, before, skip)
    else:  # only rm ran: what it deleted is what its command line names; the walk says if it is whole again
        changed, after = [], await asyncio.to_thread(changeset.snapshot, hv.ws.root, skip)
        hv.disk.observe(await asyncio.to_thread(hv.disk_total, after))
    # A setuid file outlives the command on the machine's disk (as the runner's user): never kept.
    cleared = await asyncio.to_thread(changeset.unprivilege, hv.ws.root, after.privileged)
    await hv.record(
        CommandRunChange(
            cmd=args.cmd,
            exit_code=outcome.exit_code,
            duration_ms=outcome.duration_ms,
            output_truncated=outcome.truncated,
            files_changed=len(changed),
            timestamp=now_iso(),
        )
    )
    if before.complete and not after.complete:
        ended = "; it was ended when it did" if outcome.cap_reached else ""
        raise Refused(
            "workspace-too-large",
            f"after the command the workspace cannot be walked whole: {after.why}{ended}; its changes are "
            "recorded as far as they could be seen, and only rm runs until files are removed",
        )
    if outcome.cap_reached:
        raise _cap_met(hv, outcome.cap_reached, spec.limits, outcome.exit_code)
    if after.complete and hv.disk.full() and not only_rm:
        raise hv.disk.refusal("the command's files used up the budget; its file changes are recorded")
    text = commands.render(outcome, policy.max_output_bytes, hv.mask, hv.secrets.mask_cut)
    tail, cut = shown.output_tail(hv.secrets.mask_forms(text))
    await hv.show(
        CommandOutput(
            session_id=hv.session.session_id,
            seq=hv.session.changes[-1].seq,
            cmd=hv.mask(args.cmd),
            exit_code=outcome.exit_code,
            output=tail,
            truncated=cut or outcome.truncated,
            total_bytes=outcome.total_bytes,
        )
    )
    footer = [f"[exit code {outcome.exit_code}]"]
    if outcome.truncated:
        footer.append(
            f"[output truncated: showed {min(len(outcome.output), policy.max_output_bytes)} "
            f"of {outcome.total_bytes} bytes]"
        )
    if changed:
        shown_files = ", ".join(_ledger_path(hv, c.rel, 200) for c in changed[:20])
        more = f" and {len(changed) - 20} more" if len(changed) > 20 else ""
        footer.append(f"[files changed in the workspace, recorded: {shown_files}{more}]")
    if cleared:
        names = ", ".join(_ledger_path(hv, rel, 200) for rel in cleared[:20])
        footer.append(f"[setuid/setgid bits removed (a hard-linked file's name removed instead): {names}]")
    if outcome.timed_out:
        footer.append(f"[timed out after {timeout:g}s; every process it started was killed]")
    if outcome.exit_code in disk.SIGXFSZ_EXITS:
        footer.append(f"[a file reached the command's size limit of {spec.limits.file_size} bytes]")
    return ToolResult(ok=True, output=text + "\n" + "\n".join(footer))


async def _record_changes(
    hv: Hypervisor, before: changeset.Snapshot, skip: str | None
) -> tuple[list[changeset.Changed], changeset.Snapshot]:
    """Every file the command created, changed or deleted in the workspace, named in its arguments or
    not, recorded as a file-write change (a deletion has no hash) before the command's own change."""
    after = await asyncio.to_thread(changeset.snapshot, hv.ws.root, skip)
    hv.disk.observe(await asyncio.to_thread(hv.disk_total, after))
    changed = changeset.changes(before, after)
    for item in changed[: changeset.MAX_ITEMISED]:
        hashed = await asyncio.to_thread(changeset.digest, hv.ws.root, item)
        await hv.record(
            FileWriteChange(
                rel_path=_ledger_path(hv, hashed.rel),
                bytes=hashed.size,
                sha256=hashed.sha256,
                timestamp=now_iso(),
            )
        )
    return changed, after  # past the walk's limit now: the count is a floor, and the command is refused


def _ledger_path(hv: Hypervisor, rel: str, limit: int = MAX_PATH_CHARS) -> str:
    """A path a command made, as the ledger and the model see it: masked before it is cut, so no value's
    head is left at the cut."""
    return hv.mask(changeset.shown_path(rel))[:limit]

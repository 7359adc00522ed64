"""Git on the run's repository, whose git directory lives outside the workspace (safegit): status,
diff, log and commit, the commit carrying the runner's trailers and the ledger hash."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Annotated

from nexus.agent_runner.hypervisor import safegit
from nexus.agent_runner.hypervisor.errors import Refused
from nexus.agent_runner.hypervisor.registry import tool
from nexus.agent_runner.hypervisor.state import now_iso
from nexus.agent_runner.hypervisor.tools import Args, Doc, NoArgs, ToolResult
from nexus.domain.sessions import GitCommitChange

if TYPE_CHECKING:
    from nexus.agent_runner.hypervisor.core import Hypervisor

GIT_LOG_ENTRIES = 50
MAX_MESSAGE_CHARS = 16_000
MAX_STAGED_NAMES_BYTES = 64 << 20  # the names of a commit's paths, all checked for secrets' values
_FORGED_TRAILER = re.compile(r"^\s*nexus-[\w-]*\s*:", re.IGNORECASE | re.MULTILINE)


class GitCommitArgs(Args):
    message: Annotated[str, Doc(min_length=1, description="The commit message.")]


@tool("git_status", NoArgs, "Show `git status --short --branch`.")
async def git_status(hv: Hypervisor, args: NoArgs) -> ToolResult:
    return ToolResult(ok=True, output=await hv.git_or_refuse("status", "--short", "--branch", "--untracked-files=all"))


@tool("git_diff", NoArgs, "Show the diff of the working tree against HEAD.")
async def git_diff(hv: Hypervisor, args: NoArgs) -> ToolResult:
    diff = ("diff", *safegit.NO_DRIVERS, "--no-color", *(["HEAD"] if await hv.has_head() else []))
    return ToolResult(ok=True, output=await hv.git_or_refuse(*diff) or "no changes")


@tool("git_log", NoArgs, "Show the latest commits of the run's branch (hash, date, author, subject).")
async def git_log(hv: Hypervisor, args: NoArgs) -> ToolResult:
    if not await hv.has_head():
        return ToolResult(ok=True, output="no commits yet")
    fmt = "--format=%h %ad %an%n    %s"
    log = (
        "log",
        *safegit.NO_DRIVERS,
        "--no-color",
        "--date=short",
        f"--max-count={GIT_LOG_ENTRIES}",
        fmt,
        "HEAD",
        "--",
    )
    return ToolResult(ok=True, output=await hv.git_or_refuse(*log))


@tool("git_commit", GitCommitArgs, "Stage every change and commit it.")
async def git_commit(hv: Hypervisor, args: GitCommitArgs) -> ToolResult:
    if "\0" in args.message:
        raise Refused("invalid-arguments", "the commit message contains a NUL byte")
    if not hv.permissions.can_commit:
        raise Refused("not-permitted", "this agent may not commit (can_commit is false)")
    if _FORGED_TRAILER.search(args.message):
        raise Refused(
            "forged-trailer", "a commit message may not carry Nexus-* lines: only the runner adds those trailers"
        )
    message = args.message.strip()
    if not message or len(message) > MAX_MESSAGE_CHARS:
        raise Refused("invalid-arguments", "the commit message is empty or too long")
    # What a commit writes into the repository's objects is the run's disk too (disk.py).
    if await asyncio.to_thread(hv.disk.full):
        raise hv.disk.refusal("a commit adds the work tree's new content to the repository")
    stored = await asyncio.to_thread(hv.objects_used)
    try:
        return await _commit(hv, message)
    finally:
        hv.disk.store(await asyncio.to_thread(hv.objects_used) - stored)


async def _commit(hv: Hypervisor, message: str) -> ToolResult:
    await hv.git_or_refuse("add", "-A")
    if (await hv.git("diff", "--cached", "--quiet", *safegit.NO_DRIVERS)).exit_code == 0:
        raise Refused("nothing-to-commit", "there are no changes to commit")
    names = ("diff", "--cached", "--name-only", "-z", "--no-renames", *safegit.NO_DRIVERS)
    # Every staged name is read: cut at the output cap, the names past 64 KiB went unchecked and a path
    # holding a secret's value was committed.
    staged = await hv.git(*names, max_output=MAX_STAGED_NAMES_BYTES)
    if staged.exit_code != 0 or staged.truncated:
        await hv.git("reset", "-q")
        raise Refused(
            "too-many-paths",
            f"the staged paths could not all be checked (more than {MAX_STAGED_NAMES_BYTES >> 20} MiB of names, "
            "or git failed); commit fewer files",
        )
    for path in staged.output.decode(errors="surrogateescape").split("\0"):
        if hv.secrets.contains_secret(path):
            await hv.git("reset", "-q")
            raise Refused("secret-in-path", f"{hv.mask(path)}: a secret's value may not be part of a committed path")
    # A commit is on the run's branch, then the remote: the model's text in its message (or the run's summary
    # the runner commits with) is masked, in the encodings the canary knows too, as the ledger shows it.
    message = hv.secrets.mask_forms(message)
    trailers = {**hv.trailers, "Nexus-Ledger": hv.ledger_hash}
    body = message + "\n\n" + "\n".join(f"{key}: {value}" for key, value in trailers.items())
    identity = (
        []
        if (await hv.git("config", "user.email")).exit_code == 0
        else ["-c", "user.name=Nexus Agent", "-c", "user.email=agent@nexus.invalid"]
    )
    await hv.git_or_refuse(*identity, "commit", "-q", "--no-verify", "--cleanup=verbatim", "-m", body)
    sha = (await hv.git_or_refuse("rev-parse", "HEAD")).strip()
    branch = (await hv.git_or_refuse("rev-parse", "--abbrev-ref", "HEAD")).strip()
    await hv.record(GitCommitChange(sha=sha, branch=branch, message=message, timestamp=now_iso()))
    return ToolResult(ok=True, output=f"committed {sha[:12]} on {branch}")

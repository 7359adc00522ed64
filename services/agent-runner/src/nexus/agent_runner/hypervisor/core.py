"""The Hypervisor: the only way a model touches the world.

Every tool call is validated, checked against the workspace confinement and the agent's
permissions, executed, and recorded as a sealed session change (ledger hash chain), which is
written to the state file and handed to the recorder. A model mistake never raises: it comes
back as ToolResult(ok=False) and a RefusedChange. Secret values never leave: every output,
error, change and approval detail is masked back to `${secret:NAME}`."""

import asyncio
import functools
import hashlib
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import msgspec

from nexus.agent_runner.hypervisor import changeset, commands, disk, safegit, sandbox, shown
from nexus.agent_runner.hypervisor.errors import Refused
from nexus.agent_runner.hypervisor.paths import Workspace
from nexus.agent_runner.hypervisor.secrets import SecretBox, printable
from nexus.agent_runner.hypervisor.state import append_change, now_iso, write_state
from nexus.agent_runner.hypervisor.registry import TOOLS
from nexus.agent_runner.hypervisor.tools import ToolResult, ToolSpecJSON

# Each tool module registers its tools on import; this order is the order the model sees them in.
from nexus.agent_runner.hypervisor import file_tools, command_tools, git_tools, session_tools  # noqa: F401 — they register
from nexus.domain.agents import Permissions
from nexus.domain.json_types import JsonObject
from nexus.domain.ledger import seal_one
from nexus.observability.tracing import span, tracer
from nexus.events.payloads import CommandOutput, FileDiff
from nexus.domain.sessions import (
    ApprovalChange,
    FileWriteChange,
    RefusedChange,
    SessionChange,
    SessionState,
)

TRACER = tracer("nexus.agent_runner")
log = logging.getLogger("nexus.agent_runner.hypervisor")
GIT_TIMEOUT_S = 60.0
# Changes the agent's calls may record in one attempt (NEXUS_LEDGER_MAX_CHANGES): a trivial run records
# a handful, a long one some hundreds; a command loop making files reached 500,000 in minutes.
LEDGER_CAP = 10_000
# Approval requests one attempt's agent may make: each reaches the approvers (a Telegram message to every
# team lead) and the database; a loop of them would flood both.
APPROVALS_CAP = 50
_DETAIL_CHARS = 2000

Recorder = Callable[[SessionChange], Awaitable[None]]
Approver = Callable[[str, str], Awaitable[bool]]
Spawner = Callable[[JsonObject], Awaitable[JsonObject]]
# Receives what a change looked like (FileDiff, CommandOutput), for people; never the ledger.
Shower = Callable[[FileDiff | CommandOutput], Awaitable[None]]


class RecordError(RuntimeError):
    """The session could not be recorded (state file or recorder failed): the run must stop; the
    change is already sealed in `session.changes`, so a retry after recovery loses nothing."""


class Hypervisor:
    def __init__(
        self,
        workspace: Path,
        permissions: Permissions,
        session: SessionState,
        state_file: Path | None = None,
        secrets: Mapping[str, str] = {},  # read only
        recorder: Recorder | None = None,
        approver: Approver | None = None,
        spawner: Spawner | None = None,
        commit_trailers: Mapping[str, str] = {},  # read only
        base_env: Mapping[str, str] | None = None,
        *,
        allowed_tools: Iterable[str] | None = None,
        sandbox_mode: str = "auto",
        git_dir: Path | None = None,
        private_dir: Path | None = None,
        shower: Shower | None = None,
        git_seal: Callable[[], str] | None = None,
        disk_budget: int = disk.BUDGET,
        max_changes: int = LEDGER_CAP,
        max_approvals: int = APPROVALS_CAP,
    ) -> None:
        """`git_dir`: the repository's git directory, outside the workspace (a run's); without it the
        git tools are refused: a `.git` inside the workspace is the agent's to write, so its config,
        hooks and drivers cannot be trusted. `private_dir`: the hypervisor's own room outside
        the workspace (git's empty HOME, the commands' HOME, scratch space); a fresh temporary
        directory when not given. `git_seal`: the seal of `git_dir`'s steering files as the runner took
        it, asked at each git call (a repository the runner still owes is written then); without it
        the hypervisor takes the seal itself, now. `disk_budget`: the bytes the agent may add to the
        workspace and the commands' HOME (disk.py). `max_changes`: the changes the agent's calls may
        record in this attempt (`ledger_full`). `max_approvals`: the approvals it may ask for in this attempt
        (`limit_reached`)."""
        self.ws = Workspace(workspace)
        self.workspace = Path(self.ws.root)
        self.permissions = permissions
        self.session = session
        self.state_file = Path(state_file) if state_file is not None else None
        self.secrets = SecretBox(secrets)
        self._recorder = recorder
        self._shower = shower
        self._approver = approver
        self.spawner = spawner
        self.trailers = dict(commit_trailers)
        base = dict(base_env) if base_env is not None else commands.default_base_env(self.ws.root)
        if private_dir is None:
            private_dir = Path(tempfile.mkdtemp(prefix="nexus-hv-"))
            weakref.finalize(self, shutil.rmtree, private_dir, True)  # ours: gone with the hypervisor
        # The hypervisor's own rooms are made (0700) when first needed (`rooms`): a run that starts no
        # process and writes no scratch file makes none.
        private = Path(private_dir)
        self._rooms = (private, private / "scratch", private / "home", private / "git-home")
        self._rooms_made = False
        self._scratch = private / "scratch"
        self._base = base
        self._private = private
        self._git_dir = git_dir
        # The seal of the git directory's steering files: the runner's (`git_seal`, taken when it wrote
        # the repository, which may be on first use) or taken here.
        self._git_seal = git_seal
        self._git_sealed = safegit.steering_digest(git_dir) if git_dir is not None and git_seal is None else ""
        self.sandbox = sandbox.detect(sandbox_mode)  # how agent commands are confined: bwrap, landlock or none
        self.session.sandbox = self.sandbox
        self._allowed = set(allowed_tools) if allowed_tools is not None else None
        self.disk = disk.Budget(disk_budget, self._disk_used, lambda: [self.ws.root, str(self._private / "home")])
        self._lock = asyncio.Lock()
        self.finished: str | None = None
        self._state_written = False  # by this hypervisor: until then a change writes the whole file
        self.max_changes = max_changes
        self._changes_before = len(session.changes)  # what earlier attempts recorded counts for them
        self.max_approvals = max_approvals
        self._approvals_asked = 0

    # The environments of commands and git, made when first needed: most runs start no process.
    @functools.cached_property
    def env(self) -> dict[str, str]:
        env = commands.scrub_env(self._base, self.ws.root, self.secrets.values)
        # Commands never get the workspace (nor the runner's) HOME, nor a global or system git config.
        env.update(
            HOME=str(self._private / "home"),
            GIT_CONFIG_GLOBAL="/dev/null",
            GIT_CONFIG_NOSYSTEM="1",
            GIT_CEILING_DIRECTORIES=os.path.dirname(self.ws.root),
        )
        env.pop("XDG_CONFIG_HOME", None)
        return env

    @functools.cached_property
    def _git_env(self) -> dict[str, str]:
        return safegit.env(self.env, self._private / "git-home", git_dir=self._git_dir, work_tree=self.workspace)

    @functools.cached_property
    def _nonrepo_git_env(self) -> dict[str, str]:
        """git as a patch parser: no repository at all (found neither by discovery nor by GIT_DIR)."""
        return safegit.env(self.env, self._private / "git-home") | {"GIT_CEILING_DIRECTORIES": str(self._scratch)}

    @functools.cached_property
    def _program_dirs(self) -> list[str]:
        return commands.program_dirs(self.env)

    @functools.cached_property
    def cmd_env(self) -> dict[str, str]:
        return commands.command_env(self.env)

    def rooms(self) -> None:
        """Make the hypervisor's private rooms (its directory, scratch, the commands' HOME, git's HOME),
        each 0700, before the first process or scratch file needs them."""
        if not self._rooms_made:
            for room in self._rooms:
                safegit.private_dir(room)
            self._rooms_made = True

    @property
    def scratch(self) -> Path:
        """Scratch space outside the workspace (masked copies, patch trees)."""
        self.rooms()
        return self._scratch

    @property
    def in_tree_git(self) -> str | None:
        """The git directory inside the workspace that walks of the work tree skip (a session's own)."""
        return None if self.repository_outside else os.path.join(self.ws.root, ".git")

    def disk_total(self, workspace: changeset.Snapshot) -> int | None:
        """The bytes the disk budget covers: the workspace (walked as `workspace`) and the commands' HOME;
        None when either cannot be walked whole (files out of the walk's sight count as unknown)."""
        home = changeset.snapshot(str(self._private / "home"))
        if not (workspace.complete and home.complete):
            return None
        return disk.total(workspace) + disk.total(home)

    def objects_used(self) -> int:
        """The bytes the repository's objects hold (what commits add to the disk, outside the work tree)."""
        if self._git_dir is None:
            return 0
        return disk.total(changeset.snapshot(str(self._git_dir / "objects")))

    def _disk_used(self) -> int | None:
        return self.disk_total(changeset.snapshot(self.ws.root, self.in_tree_git))

    @property
    def repository_outside(self) -> bool:
        """The session's repository lives outside the workspace (a run's): any .git in the workspace is not it."""
        return self._git_dir is not None

    # --- the contract ----------------------------------------------------------------------

    @property
    def ledger_hash(self) -> str:
        return self.session.changes[-1].hash if self.session.changes else ""

    def offered(self) -> tuple[str, ...]:
        """The names of the tools this session offers, in the order the model is shown them."""
        return tuple(name for name in TOOLS if self._offers(name))

    def tool_specs(self, allowed: list[str] | None = None) -> list[ToolSpecJSON]:
        return [TOOLS[name].spec() for name in self.offered() if allowed is None or name in allowed]

    async def call(self, tool_name: str, args: JsonObject) -> ToolResult:
        if reason := self.ledger_full():  # nothing recorded: a refusal would be one more change
            return ToolResult(ok=False, error=f"refused (ledger-limit): {reason}")
        return await self._call(tool_name, args, own=False)

    def ledger_full(self) -> str:
        """Why the agent may record no more (the run ends: every change is an event, a database
        record and a line of the API's answers), or "". A call that began below the cap finishes:
        the ledger passes it by at most one call's changes (a command's 200 files and its run)."""
        made = len(self.session.changes) - self._changes_before
        return f"ledger limit of {self.max_changes} changes reached" if made >= self.max_changes else ""

    def approvals_full(self) -> str:
        """Why the agent may ask no human again (the run ends), or ""."""
        if self._approvals_asked >= self.max_approvals:
            return f"approval limit of {self.max_approvals} requests reached"
        return ""

    def limit_reached(self) -> str:
        """Why the run must end at its next step for what the agent did through its calls, or ""."""
        return self.ledger_full() or self.approvals_full()

    async def runner_call(self, tool_name: str, args: JsonObject) -> ToolResult:
        """The runner's own calls (the final commit, meta-plan.json, its notes): the same checks,
        confinement and record, but not bound by the agent's tool list nor closed by `finish`."""
        return await self._call(tool_name, args, own=True)

    async def _call(self, tool_name: str, args: JsonObject, *, own: bool) -> ToolResult:
        async with self._lock:
            tool = tool_name if isinstance(tool_name, str) else f"<{type(tool_name).__name__}>"
            shown = printable(self.mask(tool))[:200]
            with span(
                TRACER,
                f"execute_tool {shown}",
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": shown,
                    "nexus.tool.by_runner": own,
                },
            ) as s:
                refused = ""
                try:
                    result = await self._dispatch(tool, args, own=own)
                except Refused as refusal:
                    refused = refusal.reason
                    detail = await self._refused(tool, refusal)
                    result = ToolResult(
                        ok=False,
                        error=f"refused ({refusal.reason}): {detail}" if detail else f"refused ({refusal.reason})",
                    )
                s.set_attributes(
                    {
                        "nexus.tool.outcome": "ok" if result.ok else "refused" if refused else "error",
                        "nexus.tool.refused": bool(refused),
                        "nexus.tool.refusal_reason": refused,
                    }
                )
            # A value in an encoding the canary knows is as good as the value: never shown to the model either.
            return ToolResult(
                ok=result.ok, output=self.secrets.mask_forms(result.output), error=self.secrets.mask_forms(result.error)
            )

    async def refuse(self, action: str, reason: str, detail: str) -> None:
        """Record a refusal of the runner's own (a push the canary stopped): in the ledger like a tool's."""
        async with self._lock:
            await self._refused(action, Refused(reason, detail))

    async def _refused(self, tool: str, refusal: Refused) -> str:
        """Record the refusal; returns its detail as shown: masked first, then cut, never repr()'d."""
        detail = printable(self.mask(refusal.detail))[:_DETAIL_CHARS]
        await self.record(
            RefusedChange(
                tool=printable(self.mask(tool))[:200], reason=refusal.reason, detail=detail, timestamp=now_iso()
            )
        )
        return detail

    async def gate(self, action: str, detail: str) -> str:
        """The runner's own gated actions (merge, push to the default branch), asked for and
        recorded like a tool's: returns "" when approved, else the recorded reason why not."""
        async with self._lock:
            try:
                await self.ask(action, detail)
            except Refused as refusal:
                return f"refused ({refusal.reason}): {await self._refused(action, refusal)}"
            return ""

    # --- plumbing --------------------------------------------------------------------------

    def _offers(self, name: str) -> bool:
        if name == "spawn_child" and self.spawner is None:
            return False
        return self._allowed is None or name in self._allowed

    async def _dispatch(self, tool: str, args: Any, *, own: bool = False) -> ToolResult:
        if tool not in TOOLS:
            raise Refused("unknown-tool", f"there is no tool '{tool[:200]}'; tools: {', '.join(TOOLS)}")
        if not own and self._allowed is not None and tool not in self._allowed:
            raise Refused("tool-not-allowed", f"this agent may not use {tool}")
        if not own and self.finished is not None:
            raise Refused("session-finished", "finish was already called; the session takes no more calls")
        if not isinstance(args, dict):
            raise Refused("invalid-arguments", f"arguments must be a JSON object, got {type(args).__name__}")
        registered = TOOLS[tool]
        try:
            parsed: Any = msgspec.convert(args, registered.args)
        except msgspec.ValidationError as exc:
            raise Refused("invalid-arguments", str(exc)) from None
        _require_text(parsed)
        if registered.path_arg:
            self.check_path(parsed.path)
        try:
            return await registered.handler(self, parsed)
        except OSError as exc:
            raise Refused("os-error", exc.strerror or str(exc)) from None

    def mask(self, text: str) -> str:
        return self.secrets.mask(text)

    def check_path(self, path: str) -> None:
        if self.secrets.contains_secret(path):
            raise Refused("secret-in-path", f"{self.mask(path)}: a secret's value may not be part of a path")

    def _mask_change(self, change: Any) -> Any:
        """Every text of a change, masked in the encodings the canary knows too: changes are published."""
        masked = {
            field: self.secrets.mask_forms(value)
            for field in change.__struct_fields__
            if isinstance(value := getattr(change, field), str) and field not in ("hash", "prev_hash", "timestamp")
        }
        return msgspec.structs.replace(change, **masked)

    def seal_state(self) -> None:
        """Write the session state file, durable (fsync) when it holds a ledger: called when the session
        ends. A session that recorded no change has no ledger to keep — its file says only what its
        session events said — so it is written like every other state write, without the fsync
        (~0.4–2 ms of a trivial run's CPU, in ext4's journal)."""
        self._save_state(durable=bool(self.session.changes))

    def _save_state(self, *, durable: bool, change: Any = None) -> None:
        """The whole state file, or only `change` appended to its journal once the file was written here."""
        if self.state_file is not None:
            try:
                if change is not None and self._state_written:
                    append_change(self.state_file, change)
                else:
                    write_state(self.state_file, self.session, durable=durable)
                    self._state_written = True
            except OSError as exc:
                raise RecordError(f"cannot write the session state file {self.state_file}: {exc}") from exc

    async def record(self, change: Any) -> None:
        sealed = seal_one(self._mask_change(change), seq=len(self.session.changes), prev_hash=self.ledger_hash)
        self.session.changes.append(sealed)
        self.session.updated_at = sealed.timestamp
        # Appended, fsynced at the end (seal_state); the event stream is the durable record.
        self._save_state(durable=False, change=sealed)
        if self._recorder is not None:
            try:
                await self._recorder(sealed)
            except Exception as exc:  # not the model's doing: never turned into a refusal
                raise RecordError(f"the recorder failed on change {sealed.seq}: {exc!r}") from exc

    async def show(self, content: FileDiff | CommandOutput) -> None:
        """Hand on what the last recorded change looked like. Its fields are masked and capped by
        the callers (shown.py); a failure here loses a view, not the record, so the run goes on."""
        if self._shower is None:
            return
        # Masked once more here, the one way out: a value in an encoding the canary knows is as good
        # as the value to whoever reads the event (the callers masked plain values before cutting).
        masked = {
            f: self.secrets.mask_forms(v)
            for f in content.__struct_fields__
            if isinstance(v := getattr(content, f), str)
        }
        content = msgspec.structs.replace(content, **masked)
        try:
            await self._shower(content)
        except Exception as exc:  # noqa: BLE001 — the ledger and its change events are the record
            log.warning("could not report the content of change %s: %r", content.seq, exc)

    def before_write(self, rel: str) -> bytes | None:
        """A file's content before a write, for its diff (one byte past the diff limit at most)."""
        try:
            data, _ = self.ws.read_bytes(rel, shown.DIFF_MAX_FILE_BYTES + 1)
        except Refused:
            return None
        return data

    async def show_write(self, rel: str, old: bytes | None, new: bytes | None) -> None:
        diff = shown.file_diff(rel, old, new, self.secrets.mask_forms)
        await self.show(
            FileDiff(
                session_id=self.session.session_id,
                seq=self.session.changes[-1].seq,
                rel_path=self.mask(rel),
                diff=diff.text,
                truncated=diff.truncated,
                binary=diff.binary,
                too_large=diff.too_large,
            )
        )

    async def ask(self, action: str, detail: str) -> None:
        """Pause for a human; returns only when approved."""
        if self._approver is None:
            raise Refused("approval-required", f"{action} needs approval and this run has no approver")
        if reason := self.approvals_full():  # refused, not asked: nobody hears of it
            raise Refused("approval-limit", reason)
        self._approvals_asked += 1
        # Both are shown to a human (and may be the model's own text: request_approval): masked here, the one way out.
        action, detail = self.secrets.mask_forms(action), self.secrets.mask_forms(detail)
        await self.record(ApprovalChange(action=action, decision="requested", timestamp=now_iso()))
        try:
            approved = await self._approver(action, detail)
        except TimeoutError:
            await self.record(ApprovalChange(action=action, decision="expired", timestamp=now_iso()))
            raise Refused("approval-expired", f"nobody decided on {action} in time; denied") from None
        decision: Literal["approved", "rejected"] = "approved" if approved is True else "rejected"  # only True
        await self.record(ApprovalChange(action=action, decision=decision, timestamp=now_iso()))
        if decision == "rejected":
            raise Refused("approval-rejected", f"{action} was rejected: {detail}")

    async def approve_write(self, rel: str) -> None:
        for entry in self.permissions.ask:
            if entry.startswith("write:") and fnmatchcase(rel, entry.removeprefix("write:")):
                await self.ask(entry, rel)
                return

    async def git(
        self, *args: str, cwd: str | None = None, repo: bool = True, max_output: int | None = None
    ) -> commands.CommandOutcome:
        """Git with the config isolated and every code-running knob off (safegit); never the agent's env.
        Its output is cut at the agent's output cap unless `max_output` says otherwise (a check that
        must read all of it)."""
        if repo and self._git_dir is None:
            raise Refused(
                "no-repository", "this session has no repository outside the workspace; the git tools need one"
            )
        if (
            repo
            and self._git_dir is not None
            and ((sealed := self._sealed()) == "" or safegit.steering_digest(self._git_dir) != sealed)
        ):
            raise Refused(
                "git-tampered", "the repository's git directory was changed outside the hypervisor; git refused"
            )
        if (
            repo
            and safegit.reads_work_tree(args)
            and (nested := await asyncio.to_thread(safegit.nested_git, self.ws.root))
        ):
            reason, why = safegit.hazard(nested)
            raise Refused(reason, f"{why}, so the git tools are refused until it is removed")
        self.rooms()
        started = time.time_ns() - 2_000_000_000  # a file's time is the kernel's coarse clock: a little behind
        outcome = await commands.execute(
            safegit.argv(*args),
            cwd=cwd or self.ws.root,
            env=self._git_env if repo else self._nonrepo_git_env,
            timeout_s=GIT_TIMEOUT_S,
            max_output=self.permissions.commands.max_output_bytes if max_output is None else max_output,
        )
        if outcome.timed_out and repo and self._git_dir is not None:
            # Killed mid-write (`add -A` of gigabytes): its locks would refuse every later commit of the run.
            await asyncio.to_thread(safegit.clear_locks, self._git_dir, started)
        return outcome

    def _sealed(self) -> str:
        if self._git_seal is None:
            return self._git_sealed
        try:
            return self._git_seal()  # the runner writes a repository still owed, then seals it
        except Exception as exc:  # noqa: BLE001 — any failure to write it refuses git, never the run
            raise Refused("no-repository", f"the session's repository could not be written: {exc}") from None

    def decode(self, outcome: commands.CommandOutcome) -> str:
        text = outcome.output.decode("utf-8", errors="replace")
        return self.secrets.mask_cut(text) if outcome.truncated else text

    async def write(self, rel: str, data: bytes) -> ToolResult:
        self.check_path(rel)
        grows = len(data) - self.ws.size(rel)
        await asyncio.to_thread(self.disk.grown)  # the first walk of the run, when this is its first write
        self.disk.check_write(rel, grows)
        await self.approve_write(rel)
        old = self.before_write(rel)
        self.ws.write_bytes(rel, data)
        self.disk.add(grows)
        await self.record(
            FileWriteChange(rel_path=rel, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), timestamp=now_iso())
        )
        await self.show_write(rel, old, data)
        return ToolResult(ok=True, output=f"wrote {len(data)} bytes to {rel}")

    # --- files -----------------------------------------------------------------------------

    # --- commands --------------------------------------------------------------------------

    # --- git -------------------------------------------------------------------------------

    async def git_or_refuse(self, *args: str) -> str:
        outcome = await self.git(*args)
        if outcome.timed_out:
            raise Refused(
                "git-timeout", f"git {safegit.subcommand(args)} did not finish within {GIT_TIMEOUT_S:g} s and was ended"
            )
        if outcome.exit_code != 0:
            raise Refused("git-failed", self.decode(outcome).strip())
        return self.decode(outcome)

    async def has_head(self) -> bool:
        return (await self.git("rev-parse", "--verify", "-q", "HEAD")).exit_code == 0

    # --- session ---------------------------------------------------------------------------


def _require_text(parsed: Any) -> None:
    """Every string argument is text: JSON lets a model send a lone surrogate ("\\ud800"), which no
    UTF-8 file, command line, ledger or event can hold — refused here, before any tool meets it."""
    for field in parsed.__struct_fields__:
        value = getattr(parsed, field)
        for text in value if isinstance(value, list) else (value,):
            if isinstance(text, str):
                try:
                    text.encode()
                except UnicodeEncodeError:
                    raise Refused("invalid-arguments", f"`{field}` is not Unicode text (a lone surrogate)") from None

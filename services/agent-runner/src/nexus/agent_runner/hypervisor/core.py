"""The Hypervisor: the only way a model touches the world.

Every tool call is validated, checked against the workspace confinement and the agent's
permissions, executed, and recorded as a sealed session change (ledger hash chain), which is
written to the state file and handed to the recorder. A model mistake never raises: it comes
back as ToolResult(ok=False) and a RefusedChange. Secret values never leave: every output,
error, change and approval detail is masked back to `${secret:NAME}`."""

import asyncio
import functools
import hashlib
import os
import re
import shutil
import stat
import tempfile
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import msgspec

from nexus.agent_runner.hypervisor import cmdparse, commands, patches, safegit, sandbox, search
from nexus.agent_runner.hypervisor.errors import Refused
from nexus.agent_runner.hypervisor.paths import Workspace
from nexus.agent_runner.hypervisor.secrets import SecretBox, UnknownSecret, printable
from nexus.agent_runner.hypervisor.state import now_iso, write_state
from nexus.agent_runner.hypervisor.tools import TOOLS, ToolResult, ToolSpecJSON, spec
from nexus.domain.agents import Permissions
from nexus.domain.ledger import seal_one
from nexus.observability.tracing import span, tracer
from nexus.domain.sessions import (
    ApprovalChange,
    ChildSessionChange,
    CommandRunChange,
    FileReadChange,
    FileWriteChange,
    GitCommitChange,
    NoteChange,
    RefusedChange,
    SessionChange,
    SessionState,
)

TRACER = tracer("nexus.agent_runner")
MAX_READ_BYTES = 1 << 20
MAX_WRITE_BYTES = 8 << 20
MAX_NOTE_CHARS = 16_000
MAX_LIST_ENTRIES = 1000
MAX_SEARCH_LINES = 200
MAX_SEARCH_LINE_CHARS = 300
SEARCH_TIMEOUT_S = 20.0
GIT_TIMEOUT_S = 60.0
_DETAIL_CHARS = 2000
GIT_LOG_ENTRIES = 50
_FORGED_TRAILER = re.compile(r"^\s*nexus-[\w-]*\s*:", re.IGNORECASE | re.MULTILINE)
_PATH_TOOLS = ("read_file", "write_file", "edit_file", "list_dir", "search_text")

Recorder = Callable[[SessionChange], Awaitable[None]]
Approver = Callable[[str, str], Awaitable[bool]]
Spawner = Callable[[dict], Awaitable[dict]]


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
        secrets: Mapping[str, str] = {},  # noqa: B006 - read only
        recorder: Recorder | None = None,
        approver: Approver | None = None,
        spawner: Spawner | None = None,
        commit_trailers: Mapping[str, str] = {},  # noqa: B006 - read only
        base_env: Mapping[str, str] | None = None,
        *,
        allowed_tools: Iterable[str] | None = None,
        sandbox_mode: str = "auto",
        git_dir: Path | None = None,
        private_dir: Path | None = None,
    ) -> None:
        """`git_dir`: the repository's git directory, outside the workspace (a run's); without it the
        git tools are refused: a `.git` inside the workspace is the agent's to write, so its config,
        hooks and drivers cannot be trusted. `private_dir`: the hypervisor's own room outside
        the workspace (git's empty HOME, the commands' HOME, scratch space); a fresh temporary
        directory when not given."""
        self._ws = Workspace(workspace)
        self.workspace = Path(self._ws.root)
        self.permissions = permissions
        self.session = session
        self.state_file = Path(state_file) if state_file is not None else None
        self._secrets = SecretBox(secrets)
        self._recorder = recorder
        self._approver = approver
        self._spawner = spawner
        self._trailers = dict(commit_trailers)
        base = dict(base_env) if base_env is not None else commands.default_base_env(self._ws.root)
        if private_dir is None:
            private_dir = Path(tempfile.mkdtemp(prefix="nexus-hv-"))
            weakref.finalize(self, shutil.rmtree, private_dir, True)  # ours: gone with the hypervisor
        private = safegit.private_dir(Path(private_dir))
        self._scratch = safegit.private_dir(private / "scratch")
        self._env = commands.scrub_env(base, self._ws.root, self._secrets.values)
        # Commands never get the workspace (nor the runner's) HOME, nor a global or system git config.
        self._env.update(HOME=str(safegit.private_dir(private / "home")), GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1",
                         GIT_CEILING_DIRECTORIES=os.path.dirname(self._ws.root))
        self._env.pop("XDG_CONFIG_HOME", None)
        self._git_dir = git_dir
        self._git_sealed = safegit.steering_digest(git_dir) if git_dir is not None else ""
        self._git_env = safegit.env(self._env, safegit.private_dir(private / "git-home"), git_dir=git_dir, work_tree=self.workspace)
        # git as a patch parser: no repository at all (found neither by discovery nor by GIT_DIR).
        self._nonrepo_git_env = safegit.env(self._env, private / "git-home") | {"GIT_CEILING_DIRECTORIES": str(self._scratch)}
        self._program_dirs = commands.program_dirs(self._env)
        self._cmd_env = commands.command_env(self._env)
        self.sandbox = sandbox.detect(sandbox_mode)  # how agent commands are confined: bwrap, landlock or none
        self.session.sandbox = self.sandbox
        self._allowed = set(allowed_tools) if allowed_tools is not None else None
        self._lock = asyncio.Lock()
        self.finished: str | None = None

    # --- the contract ----------------------------------------------------------------------

    @property
    def ledger_hash(self) -> str:
        return self.session.changes[-1].hash if self.session.changes else ""

    def tool_specs(self, allowed: list[str] | None = None) -> list[ToolSpecJSON]:
        return [spec(name) for name in TOOLS if self._offers(name) and (allowed is None or name in allowed)]

    async def call(self, tool_name: str, args: dict) -> ToolResult:
        return await self._call(tool_name, args, own=False)

    async def runner_call(self, tool_name: str, args: dict) -> ToolResult:
        """The runner's own calls (the final commit, meta-plan.json, its notes): the same checks,
        confinement and record, but not bound by the agent's tool list nor closed by `finish`."""
        return await self._call(tool_name, args, own=True)

    async def _call(self, tool_name: str, args: dict, *, own: bool) -> ToolResult:
        async with self._lock:
            tool = tool_name if isinstance(tool_name, str) else f"<{type(tool_name).__name__}>"
            shown = printable(self._mask(tool))[:200]
            with span(TRACER, f"execute_tool {shown}", attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": shown,
                                                                   "nexus.tool.by_runner": own}) as s:
                refused = ""
                try:
                    result = await self._dispatch(tool, args, own=own)
                except Refused as refusal:
                    refused = refusal.reason
                    detail = await self._refused(tool, refusal)
                    result = ToolResult(ok=False, error=f"refused ({refusal.reason}): {detail}" if detail else f"refused ({refusal.reason})")
                s.set_attributes({"nexus.tool.outcome": "ok" if result.ok else "refused" if refused else "error",
                                  "nexus.tool.refused": bool(refused), "nexus.tool.refusal_reason": refused})
            return ToolResult(ok=result.ok, output=self._mask(result.output), error=self._mask(result.error))

    async def refuse(self, action: str, reason: str, detail: str) -> None:
        """Record a refusal of the runner's own (a push the canary stopped): in the ledger like a tool's."""
        async with self._lock:
            await self._refused(action, Refused(reason, detail))

    async def _refused(self, tool: str, refusal: Refused) -> str:
        """Record the refusal; returns its detail as shown: masked first, then cut, never repr()'d."""
        detail = printable(self._mask(refusal.detail))[:_DETAIL_CHARS]
        await self._record(RefusedChange(tool=printable(self._mask(tool))[:200], reason=refusal.reason, detail=detail, timestamp=now_iso()))
        return detail

    async def gate(self, action: str, detail: str) -> str:
        """The runner's own gated actions (merge, push to the default branch), asked for and
        recorded like a tool's: returns "" when approved, else the recorded reason why not."""
        async with self._lock:
            try:
                await self._ask(action, detail)
            except Refused as refusal:
                return f"refused ({refusal.reason}): {await self._refused(action, refusal)}"
            return ""

    # --- plumbing --------------------------------------------------------------------------

    def _offers(self, name: str) -> bool:
        if name == "spawn_child" and self._spawner is None:
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
        try:
            parsed = msgspec.convert(args, TOOLS[tool][0])
        except msgspec.ValidationError as exc:
            raise Refused("invalid-arguments", str(exc)) from None
        if tool in _PATH_TOOLS:
            self._no_secret_in_path(parsed.path)
        handler = getattr(self, f"_tool_{tool}")
        try:
            return await handler(parsed)
        except OSError as exc:
            raise Refused("os-error", exc.strerror or str(exc)) from None

    def _mask(self, text: str) -> str:
        return self._secrets.mask(text)

    def _no_secret_in_path(self, path: str) -> None:
        if self._secrets.contains_secret(path):
            raise Refused("secret-in-path", f"{self._mask(path)}: a secret's value may not be part of a path")

    def _mask_change(self, change: Any) -> Any:
        masked = {
            field: self._mask(value)
            for field in change.__struct_fields__
            if isinstance(value := getattr(change, field), str) and field not in ("hash", "prev_hash", "timestamp")
        }
        return msgspec.structs.replace(change, **masked)

    def seal_state(self) -> None:
        """Make the session state file durable (fsync): called when the session ends."""
        self._save_state(durable=True)

    def _save_state(self, *, durable: bool) -> None:
        if self.state_file is not None:
            try:
                write_state(self.state_file, self.session, durable=durable)
            except OSError as exc:
                raise RecordError(f"cannot write the session state file {self.state_file}: {exc}") from exc

    async def _record(self, change: Any) -> None:
        sealed = seal_one(self._mask_change(change), seq=len(self.session.changes), prev_hash=self.ledger_hash)
        self.session.changes.append(sealed)
        self.session.updated_at = sealed.timestamp
        self._save_state(durable=False)  # fsynced at the end (seal_state); the event stream is the durable record
        if self._recorder is not None:
            try:
                await self._recorder(sealed)
            except Exception as exc:  # not the model's doing: never turned into a refusal
                raise RecordError(f"the recorder failed on change {sealed.seq}: {exc!r}") from exc

    async def _ask(self, action: str, detail: str) -> None:
        """Pause for a human; returns only when approved."""
        if self._approver is None:
            raise Refused("approval-required", f"{action} needs approval and this run has no approver")
        detail = self._mask(detail)
        await self._record(ApprovalChange(action=action, decision="requested", timestamp=now_iso()))
        try:
            approved = await self._approver(action, detail)
        except TimeoutError:
            await self._record(ApprovalChange(action=action, decision="expired", timestamp=now_iso()))
            raise Refused("approval-expired", f"nobody decided on {action} in time; denied") from None
        decision = "approved" if approved is True else "rejected"  # only a real True approves
        await self._record(ApprovalChange(action=action, decision=decision, timestamp=now_iso()))
        if decision == "rejected":
            raise Refused("approval-rejected", f"{action} was rejected: {detail}")

    async def _approve_write(self, rel: str) -> None:
        for entry in self.permissions.ask:
            if entry.startswith("write:") and fnmatchcase(rel, entry.removeprefix("write:")):
                await self._ask(entry, rel)
                return

    async def _git(self, *args: str, cwd: str | None = None, repo: bool = True) -> commands.CommandOutcome:
        """Git with the config isolated and every code-running knob off (safegit); never the agent's env."""
        if repo and self._git_dir is None:
            raise Refused("no-repository", "this session has no repository outside the workspace; the git tools need one")
        if repo and self._git_dir is not None and safegit.steering_digest(self._git_dir) != self._git_sealed:
            raise Refused("git-tampered", "the repository's git directory was changed outside the hypervisor; git refused")
        return await commands.execute(
            safegit.argv(*args), cwd=cwd or self._ws.root, env=self._git_env if repo else self._nonrepo_git_env,
            timeout_s=GIT_TIMEOUT_S, max_output=self.permissions.commands.max_output_bytes,
        )

    def _decode(self, outcome: commands.CommandOutcome) -> str:
        text = outcome.output.decode("utf-8", errors="replace")
        return self._secrets.mask_cut(text) if outcome.truncated else text

    async def _write(self, rel: str, data: bytes) -> ToolResult:
        self._no_secret_in_path(rel)
        await self._approve_write(rel)
        self._ws.write_bytes(rel, data)
        await self._record(FileWriteChange(rel_path=rel, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), timestamp=now_iso()))
        return ToolResult(ok=True, output=f"wrote {len(data)} bytes to {rel}")

    # --- files -----------------------------------------------------------------------------

    async def _tool_read_file(self, args: Any) -> ToolResult:
        rel = self._ws.resolve(args.path)
        data, size = self._ws.read_bytes(rel, MAX_READ_BYTES)
        text = data.decode("utf-8", errors="replace")
        if size > len(data):
            text = self._secrets.mask_cut(text) + f"\n[truncated: showed {len(data)} of {size} bytes]"
        await self._record(FileReadChange(rel_path=rel, timestamp=now_iso()))
        return ToolResult(ok=True, output=text)

    async def _tool_write_file(self, args: Any) -> ToolResult:
        rel = self._ws.resolve(args.path, writing=True)
        data = args.content.encode()
        if len(data) > MAX_WRITE_BYTES:
            raise Refused("too-large", f"{len(data)} bytes; files are limited to {MAX_WRITE_BYTES}")
        return await self._write(rel, data)

    async def _tool_edit_file(self, args: Any) -> ToolResult:
        rel = self._ws.resolve(args.path, writing=True)
        if not args.old:
            raise Refused("invalid-arguments", "`old` must not be empty")
        data, size = self._ws.read_bytes(rel, MAX_WRITE_BYTES)
        if size > len(data):
            raise Refused("too-large", f"{rel} is {size} bytes; edits are limited to {MAX_WRITE_BYTES}")
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise Refused("not-text", f"{rel} is not UTF-8 text") from None
        count = text.count(args.old)
        if count != 1:
            raise Refused("no-match" if count == 0 else "ambiguous-match", f"`old` occurs {count} times in {rel}; it must occur exactly once")
        new = text.replace(args.old, args.new, 1).encode()
        if len(new) > MAX_WRITE_BYTES:
            raise Refused("too-large", f"the edit makes {rel} {len(new)} bytes")
        return await self._write(rel, new)

    async def _tool_apply_patch(self, args: Any) -> ToolResult:
        patch = args.patch.encode()
        if len(patch) > MAX_WRITE_BYTES:
            raise Refused("too-large", f"the patch is {len(patch)} bytes")
        scratch = tempfile.mkdtemp(prefix="patch-", dir=self._scratch)
        try:
            return await self._apply(patch, Path(scratch))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def _apply(self, patch: bytes, scratch: Path) -> ToolResult:
        """git's own parser lists what the patch touches and with which modes; the patch is applied to
        private copies of those files, and each result is written back path-safely (patches.py)."""
        git = functools.partial(self._git, repo=False)
        plan = await patches.plan(patch, scratch, git)
        rels = []
        for path in plan.paths:
            self._no_secret_in_path(path)
            rel = self._ws.resolve(path, writing=True)
            if rel != os.path.normpath(path):
                raise Refused("symlink", f"{path}: a patch may not go through a symlinked directory")
            rels.append(rel)
        plan.paths = rels
        for rel in rels:
            await self._approve_write(rel)
        results = await patches.apply(plan, self._ws, git)
        for rel, data in results:
            digest = hashlib.sha256(data).hexdigest() if data is not None else ""
            await self._record(FileWriteChange(rel_path=rel, bytes=len(data or b""), sha256=digest, timestamp=now_iso()))
        return ToolResult(ok=True, output="applied to " + ", ".join(rel for rel, _ in results))

    async def _tool_list_dir(self, args: Any) -> ToolResult:
        rel = self._ws.resolve(args.path)
        fd = self._ws.open_dir(rel)
        try:
            names = sorted(os.listdir(fd))
            lines = []
            for name in names[:MAX_LIST_ENTRIES]:
                mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
                lines.append(name + ("/" if stat.S_ISDIR(mode) else "@" if stat.S_ISLNK(mode) else ""))
        finally:
            os.close(fd)
        if len(names) > MAX_LIST_ENTRIES:
            lines.append(f"[{len(names) - MAX_LIST_ENTRIES} more entries not shown]")
        return ToolResult(ok=True, output="\n".join(lines))

    async def _tool_search_text(self, args: Any) -> ToolResult:
        """grep -E over a masked copy of the files: a secret's value can be neither shown nor probed."""
        rel = self._ws.resolve(args.path)
        if not args.pattern:
            raise Refused("invalid-arguments", "the pattern is empty")
        scratch = tempfile.mkdtemp(prefix="search-", dir=self._scratch)
        try:
            skipped = search.masked_copy(self._ws, rel, Path(scratch), self._secrets)
            argv = ["grep", "-rnIE", "--null", "--devices=skip", "--color=never", "-e", args.pattern, "--", rel]
            outcome = await commands.execute(
                argv, cwd=scratch, env=self._env, timeout_s=SEARCH_TIMEOUT_S,
                max_output=self.permissions.commands.max_output_bytes,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if outcome.exit_code not in (0, 1) and not outcome.timed_out:
            raise Refused("invalid-pattern", self._decode(outcome).strip())
        shown = search.format_matches(self._decode(outcome), MAX_SEARCH_LINES, MAX_SEARCH_LINE_CHARS)
        if outcome.truncated or outcome.timed_out:
            shown.append("[more matches not shown; narrow the pattern or the path]")
        if skipped:
            shown.append(f"[{skipped} files not searched: larger than {search.MAX_FILE_BYTES} bytes, hard-linked, or over the total]")
        return ToolResult(ok=True, output="\n".join(shown) if shown else "no matches")

    # --- commands --------------------------------------------------------------------------

    async def _tool_run_command(self, args: Any) -> ToolResult:
        policy = self.permissions.commands
        template = commands.parse(args.cmd)
        ctx = cmdparse.Context(self._ws.root, self._cmd_env.get("PATH", ""))
        plan = cmdparse.analyze(template, ctx)
        decision, why = commands.decide(args.cmd, plan.layers, policy, self.permissions.ask)
        if decision == "deny":
            raise Refused("policy-deny", f"the command policy denies it ({why})")
        try:
            secret_env = {name: self._secrets.substitute(value) for name, value in plan.env.items()}
        except UnknownSecret as exc:
            raise Refused("unknown-secret", f"no secret named {exc.name}") from None
        if decision == "ask":
            await self._ask("command", args.cmd)
        for entry, rel in cmdparse.approvals(plan.writes, self.permissions.ask):
            await self._ask(entry, rel)
        timeout = min(args.timeout_s, policy.timeout_s) if args.timeout_s else policy.timeout_s
        spec = sandbox.Spec(workspace=self._ws.root, network=policy.network, programs=plan.programs,
                            limits=sandbox.Limits(cpu_s=int(timeout) + 5), home=self._env.get("HOME"))
        longest = max((len(v.encode()) for v in self._secrets.values), default=0)
        outcome = await commands.execute(
            plan.argv, cwd=self._ws.root, env={**self._cmd_env, **secret_env}, timeout_s=timeout,
            max_output=policy.max_output_bytes, confine=(self.sandbox, spec), slack=longest,
        )
        await self._record(
            CommandRunChange(
                cmd=args.cmd, exit_code=outcome.exit_code, duration_ms=outcome.duration_ms,
                output_truncated=outcome.truncated, timestamp=now_iso(),
            )
        )
        text = commands.render(outcome, policy.max_output_bytes, self._mask, self._secrets.mask_cut)
        footer = [f"[exit code {outcome.exit_code}]"]
        if outcome.truncated:
            footer.append(f"[output truncated: showed {min(len(outcome.output), policy.max_output_bytes)} of {outcome.total_bytes} bytes]")
        if outcome.timed_out:
            footer.append(f"[timed out after {timeout:g}s; every process it started was killed]")
        return ToolResult(ok=True, output=text + "\n" + "\n".join(footer))

    # --- git -------------------------------------------------------------------------------

    async def _git_or_refuse(self, *args: str) -> str:
        outcome = await self._git(*args)
        if outcome.exit_code != 0:
            raise Refused("git-failed", self._decode(outcome).strip())
        return self._decode(outcome)

    async def _tool_git_status(self, args: Any) -> ToolResult:
        return ToolResult(ok=True, output=await self._git_or_refuse("status", "--short", "--branch", "--untracked-files=all"))

    async def _has_head(self) -> bool:
        return (await self._git("rev-parse", "--verify", "-q", "HEAD")).exit_code == 0

    async def _tool_git_diff(self, args: Any) -> ToolResult:
        diff = ("diff", *safegit.NO_DRIVERS, "--no-color", *(["HEAD"] if await self._has_head() else []))
        return ToolResult(ok=True, output=await self._git_or_refuse(*diff) or "no changes")

    async def _tool_git_log(self, args: Any) -> ToolResult:
        if not await self._has_head():
            return ToolResult(ok=True, output="no commits yet")
        fmt = "--format=%h %ad %an%n    %s"
        log = ("log", *safegit.NO_DRIVERS, "--no-color", "--date=short", f"--max-count={GIT_LOG_ENTRIES}", fmt, "HEAD", "--")
        return ToolResult(ok=True, output=await self._git_or_refuse(*log))

    async def _tool_git_commit(self, args: Any) -> ToolResult:
        if not self.permissions.can_commit:
            raise Refused("not-permitted", "this agent may not commit (can_commit is false)")
        if _FORGED_TRAILER.search(args.message):
            raise Refused("forged-trailer", "a commit message may not carry Nexus-* lines: only the runner adds those trailers")
        message = args.message.strip()
        if not message or len(message) > MAX_NOTE_CHARS:
            raise Refused("invalid-arguments", "the commit message is empty or too long")
        await self._git_or_refuse("add", "-A")
        if (await self._git("diff", "--cached", "--quiet", *safegit.NO_DRIVERS)).exit_code == 0:
            raise Refused("nothing-to-commit", "there are no changes to commit")
        staged = await self._git("diff", "--cached", "--name-only", "-z", "--no-renames", *safegit.NO_DRIVERS)
        for path in staged.output.decode(errors="surrogateescape").split("\0"):
            if self._secrets.contains_secret(path):
                await self._git("reset", "-q")
                raise Refused("secret-in-path", f"{self._mask(path)}: a secret's value may not be part of a committed path")
        trailers = {**self._trailers, "Nexus-Ledger": self.ledger_hash}
        body = message + "\n\n" + "\n".join(f"{key}: {value}" for key, value in trailers.items())
        identity = [] if (await self._git("config", "user.email")).exit_code == 0 else [
            "-c", "user.name=Nexus Agent", "-c", "user.email=agent@nexus.invalid"
        ]
        await self._git_or_refuse(*identity, "commit", "-q", "--no-verify", "--cleanup=verbatim", "-m", body)
        sha = (await self._git_or_refuse("rev-parse", "HEAD")).strip()
        branch = (await self._git_or_refuse("rev-parse", "--abbrev-ref", "HEAD")).strip()
        await self._record(GitCommitChange(sha=sha, branch=branch, message=message, timestamp=now_iso()))
        return ToolResult(ok=True, output=f"committed {sha[:12]} on {branch}")

    # --- session ---------------------------------------------------------------------------

    async def _tool_note(self, args: Any) -> ToolResult:
        if len(args.message) > MAX_NOTE_CHARS:
            raise Refused("too-large", f"notes are limited to {MAX_NOTE_CHARS} characters")
        self.session.notes.append(self._mask(args.message))
        await self._record(NoteChange(message=args.message, timestamp=now_iso()))
        return ToolResult(ok=True, output="noted")

    async def _tool_request_approval(self, args: Any) -> ToolResult:
        await self._ask(args.action, args.detail)
        return ToolResult(ok=True, output=f"approved: {args.action}")

    async def _tool_spawn_child(self, args: Any) -> ToolResult:
        if self._spawner is None:
            raise Refused("not-permitted", "spawn_child is only for meta sessions")
        for path in args.target_files:
            self._no_secret_in_path(path)
        targets = [self._ws.resolve(path, writing=True) for path in args.target_files]
        request = {"title": args.title, "description": args.description, "target_files": targets}
        if args.agent:
            request["agent"] = args.agent
        if args.weight != 1.0:
            request["weight"] = args.weight
        try:
            result = await self._spawner(request)
        except Exception as exc:  # the spawner's failure is the model's answer, and on the record
            raise Refused("spawn-failed", str(exc)) from None
        child_id = result.get("session_id") or result.get("sessionId")
        if not isinstance(child_id, str) or not child_id:
            raise Refused("spawn-failed", "the spawner returned no session id")
        task_id = result.get("task_id") or result.get("taskId") or ""
        await self._record(ChildSessionChange(child_session_id=child_id, task_id=str(task_id), timestamp=now_iso()))
        return ToolResult(ok=True, output=msgspec.json.encode(result).decode())

    async def _tool_finish(self, args: Any) -> ToolResult:
        if len(args.summary) > MAX_NOTE_CHARS:
            raise Refused("too-large", f"the summary is limited to {MAX_NOTE_CHARS} characters")
        self.finished = self._mask(args.summary)
        await self._record(NoteChange(message=f"finished: {args.summary}", timestamp=now_iso()))
        return ToolResult(ok=True, output="session finished")

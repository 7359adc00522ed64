"""The Hypervisor: the only way a model touches the world.

Every tool call is validated, checked against the workspace confinement and the agent's
permissions, executed, and recorded as a sealed session change (ledger hash chain), which is
written to the state file and handed to the recorder. A model mistake never raises: it comes
back as ToolResult(ok=False) and a RefusedChange. Secret values never leave: every output,
error, change and approval detail is masked back to `${secret:NAME}`."""

import asyncio
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import msgspec

from nexus.agent_runner.hypervisor import cmdparse, commands, sandbox
from nexus.agent_runner.hypervisor.errors import Refused
from nexus.agent_runner.hypervisor.paths import Workspace
from nexus.agent_runner.hypervisor.secrets import SecretBox, UnknownSecret
from nexus.agent_runner.hypervisor.state import now_iso, write_state
from nexus.agent_runner.hypervisor.tools import TOOLS, ToolResult, ToolSpecJSON, spec
from nexus.domain.agents import Permissions
from nexus.domain.ledger import seal_one
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

MAX_READ_BYTES = 1 << 20
MAX_WRITE_BYTES = 8 << 20
MAX_NOTE_CHARS = 16_000
MAX_LIST_ENTRIES = 1000
MAX_SEARCH_LINES = 200
MAX_SEARCH_LINE_CHARS = 300
SEARCH_TIMEOUT_S = 20.0
GIT_TIMEOUT_S = 60.0
_DETAIL_CHARS = 2000
_GIT_HARDENING = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "commit.gpgSign=false")
_FORGED_TRAILER = re.compile(r"^\s*nexus-[\w-]*\s*:", re.IGNORECASE)
_LINK_MODES = re.compile(r"^(?:new file mode|new mode|index \S+) (?:120000|160000)\s*$", re.MULTILINE)
# Paths a patch names in its headers (a `---` line counts only when a `+++` line follows it).
_PATCH_PATHS = re.compile(
    r"^(?:--- (?P<old>[^\t\n]+)[^\n]*\n\+\+\+ (?P<new>[^\t\n]+)|diff --git (?P<git>.+)|(?:rename|copy) (?:from|to) (?P<moved>.+))$",
    re.MULTILINE,
)

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
    ) -> None:
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
        self._env = commands.scrub_env(base, self._ws.root, self._secrets.values)
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
            tool = tool_name if isinstance(tool_name, str) else repr(tool_name)
            try:
                result = await self._dispatch(tool, args, own=own)
            except Refused as refusal:
                detail = self._mask(refusal.detail)[:_DETAIL_CHARS]
                await self._record(RefusedChange(tool=tool[:200], reason=refusal.reason, detail=detail, timestamp=now_iso()))
                result = ToolResult(ok=False, error=f"refused ({refusal.reason}): {detail}" if detail else f"refused ({refusal.reason})")
            return ToolResult(ok=result.ok, output=self._mask(result.output), error=self._mask(result.error))

    async def gate(self, action: str, detail: str) -> str:
        """The runner's own gated actions (merge, push to the default branch), asked for and
        recorded like a tool's: returns "" when approved, else the recorded reason why not."""
        async with self._lock:
            try:
                await self._ask(action, detail)
            except Refused as refusal:
                why = self._mask(refusal.detail)[:_DETAIL_CHARS]
                await self._record(RefusedChange(tool=action[:200], reason=refusal.reason, detail=why, timestamp=now_iso()))
                return f"refused ({refusal.reason}): {why}"
            return ""

    # --- plumbing --------------------------------------------------------------------------

    def _offers(self, name: str) -> bool:
        if name == "spawn_child" and self._spawner is None:
            return False
        return self._allowed is None or name in self._allowed

    async def _dispatch(self, tool: str, args: Any, *, own: bool = False) -> ToolResult:
        if tool not in TOOLS:
            raise Refused("unknown-tool", f"there is no tool {tool[:200]!r}; tools: {', '.join(TOOLS)}")
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
        handler = getattr(self, f"_tool_{tool}")
        try:
            return await handler(parsed)
        except OSError as exc:
            raise Refused("os-error", exc.strerror or str(exc)) from None

    def _mask(self, text: str) -> str:
        return self._secrets.mask(text)

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

    async def _git(self, *args: str) -> commands.CommandOutcome:
        return await commands.execute(
            ["git", *_GIT_HARDENING, *args], cwd=self._ws.root, env=self._env,
            timeout_s=GIT_TIMEOUT_S, max_output=self.permissions.commands.max_output_bytes,
        )

    def _decode(self, outcome: commands.CommandOutcome) -> str:
        text = outcome.output.decode("utf-8", errors="replace")
        return self._secrets.mask_cut(text) if outcome.truncated else text

    async def _write(self, rel: str, data: bytes) -> ToolResult:
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
        if _LINK_MODES.search(args.patch):
            raise Refused("symlink", "patches may not create symlinks or submodules")
        fd, patch_file = tempfile.mkstemp(prefix="nexus-patch-", suffix=".diff")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(patch)
            return await self._apply(args.patch, patch_file)
        finally:
            os.unlink(patch_file)

    async def _apply(self, patch: str, patch_file: str) -> ToolResult:
        for path in _named_paths(patch):  # our own reading of the headers, before git's
            self._ws.resolve(path, writing=True)
        numstat = await self._git("apply", "--numstat", "-z", patch_file)
        if numstat.exit_code != 0:
            raise Refused("invalid-patch", self._decode(numstat).strip())
        # numstat -z: "added\tdeleted\tpath\0", or "added\tdeleted\t\0from\0to\0" for renames.
        touched = {p.split("\t")[-1] for p in numstat.output.decode(errors="replace").split("\0") if p.split("\t")[-1]}
        if not touched:
            raise Refused("invalid-patch", "the patch touches no file")
        rels = sorted({self._ws.resolve(path, writing=True) for path in touched})
        for rel in rels:
            await self._approve_write(rel)
        applied = await self._git("apply", "--whitespace=nowarn", patch_file)
        if applied.exit_code != 0:
            raise Refused("patch-failed", self._decode(applied).strip())
        for rel in rels:
            try:
                data, _ = self._ws.read_bytes(rel, MAX_WRITE_BYTES)
            except Refused:  # deleted (or renamed away) by the patch
                data = b""
            digest = hashlib.sha256(data).hexdigest() if data else ""
            await self._record(FileWriteChange(rel_path=rel, bytes=len(data), sha256=digest, timestamp=now_iso()))
        return ToolResult(ok=True, output="applied to " + ", ".join(rels))

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
        rel = self._ws.resolve(args.path)
        if not args.pattern:
            raise Refused("invalid-arguments", "the pattern is empty")
        argv = ["grep", "-rnIE", "--null", "--devices=skip", "--exclude-dir=.git", "--color=never", "-e", args.pattern, "--", rel]
        outcome = await commands.execute(
            argv, cwd=self._ws.root, env=self._env, timeout_s=SEARCH_TIMEOUT_S,
            max_output=self.permissions.commands.max_output_bytes,
        )
        if outcome.exit_code == 1 and not outcome.timed_out:
            return ToolResult(ok=True, output="no matches")
        if outcome.exit_code not in (0, 1) and not outcome.timed_out:
            raise Refused("invalid-pattern", self._decode(outcome).strip())
        matches = []
        for line in self._decode(outcome).splitlines():
            path, _, rest = line.partition("\0")  # --null: "path\0lineno:text"
            number, _, text = rest.partition(":")
            if number.isdigit():
                matches.append((path.removeprefix("./"), int(number), text))
        matches.sort()
        shown = [f"{path}:{number}:{text}"[:MAX_SEARCH_LINE_CHARS] for path, number, text in matches[:MAX_SEARCH_LINES]]
        if len(matches) > MAX_SEARCH_LINES or outcome.truncated or outcome.timed_out:
            shown.append("[more matches not shown; narrow the pattern or the path]")
        return ToolResult(ok=True, output="\n".join(shown))

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
                            limits=sandbox.Limits(cpu_s=int(timeout) + 5))
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
        return ToolResult(ok=True, output=await self._git_or_refuse("status", "--short", "--branch"))

    async def _tool_git_diff(self, args: Any) -> ToolResult:
        has_head = (await self._git("rev-parse", "--verify", "-q", "HEAD")).exit_code == 0
        diff = ("diff", "--no-ext-diff", "--no-textconv", "--no-color", *(["HEAD"] if has_head else []))
        return ToolResult(ok=True, output=await self._git_or_refuse(*diff) or "no changes")

    async def _tool_git_commit(self, args: Any) -> ToolResult:
        if not self.permissions.can_commit:
            raise Refused("not-permitted", "this agent may not commit (can_commit is false)")
        message = "\n".join(line for line in args.message.splitlines() if not _FORGED_TRAILER.match(line)).strip()
        if not message or len(message) > MAX_NOTE_CHARS:
            raise Refused("invalid-arguments", "the commit message is empty (Nexus-* trailers are the hypervisor's) or too long")
        await self._git_or_refuse("add", "-A")
        if (await self._git("diff", "--cached", "--quiet")).exit_code == 0:
            raise Refused("nothing-to-commit", "there are no changes to commit")
        trailers = {**self._trailers, "Nexus-Ledger": self.ledger_hash}
        body = message + "\n\n" + "\n".join(f"{key}: {value}" for key, value in trailers.items())
        identity = [] if (await self._git("config", "user.email")).exit_code == 0 else [
            "-c", "user.name=Nexus Agent", "-c", "user.email=agent@nexus.invalid"
        ]
        await self._git_or_refuse(*identity, "commit", "-q", "--no-verify", "-m", body)
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
        targets = [self._ws.resolve(path, writing=True) for path in args.target_files]
        request = {"title": args.title, "description": args.description, "target_files": targets}
        if args.agent:
            request["agent"] = args.agent
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


def _named_paths(patch: str) -> set[str]:
    named: set[str] = set()
    for match in _PATCH_PATHS.finditer(patch):
        if match.group("git"):
            raws = match.group("git").split(" ")  # unquoted "a/x b/x"; odd names are still checked by git's list
        else:
            raws = [g for g in (match.group("old"), match.group("new"), match.group("moved")) if g]
        for raw in raws:
            raw = raw.strip().strip('"')
            if raw and raw != "/dev/null":
                named.add(raw[2:] if raw[:2] in ("a/", "b/") and not match.group("moved") else raw)
    return named

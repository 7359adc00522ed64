"""nexus-agent-tool: the hypervisor as a JSON-only CLI, so an external coding CLI can
be the brain while the hypervisor keeps the record.

    nexus-agent-tool start --project DIR [--parent ID] [--backend NAME] [--session-id ID] [--permissions FILE]
    nexus-agent-tool log --session ID --message TEXT
    nexus-agent-tool write-file --session ID --path REL [--content TEXT]   (no --content: stdin)
    nexus-agent-tool run --session ID [--timeout S] (--cmd "LINE" | -- ARGV...)
    nexus-agent-tool status --session ID
    nexus-agent-tool finish --session ID [--summary TEXT] [--status completed|error]

Every invocation prints exactly one JSON object on stdout; failures print {"ok": false,
"error": ...} and exit non-zero (1: refused or failed, 2: bad usage). Session state lives in
$NEXUS_AGENT_SESSIONS_DIR (default ~/.nexus/agent-sessions) as <sessionId>.json, with the
agent's permissions beside it (<sessionId>.permissions.json, from `start --permissions`; without
it commands default to deny). The sessions directory may not lie inside the project: the agent
could rewrite its own permissions there. Commands get an empty private HOME
(<sessionId>.private/home), never the project. Calls on one session are serialised with a lock
file. Secrets are not available here: a `${secret:NAME}` in a command is refused."""

import argparse
import asyncio
import fcntl
import os
import re
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, cast

import msgspec

from nexus.agent_runner.hypervisor import Hypervisor
from nexus.agent_runner.hypervisor.state import now_iso, read_state, write_json, write_state
from nexus.domain.agents import CommandPolicy, Permissions
from nexus.domain.json_types import JsonObject
from nexus.domain.ledger import verify_chain
from nexus.domain.sessions import CommandRunChange, SessionState, SessionStatus

_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class CliError(Exception):
    def __init__(self, message: str, code: int = 1, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(message, code=2)


def sessions_dir() -> Path:
    configured = os.environ.get("NEXUS_AGENT_SESSIONS_DIR")
    return Path(configured) if configured else Path.home() / ".nexus" / "agent-sessions"


def _session_id(value: str) -> str:
    if not _SESSION_ID.match(value) or ".." in value:
        raise CliError("invalid session id (letters, digits, '_', '.', '-'; at most 128)", code=2)
    return value


def _paths(session_id: str) -> tuple[Path, Path, Path]:
    base = sessions_dir()
    name = _session_id(session_id)
    return base / f"{name}.json", base / f"{name}.permissions.json", base / f"{name}.lock"


def _private_dir(session_id: str) -> Path:
    """The hypervisor's own room for this session (commands' HOME, git's HOME, scratch)."""
    return sessions_dir() / f"{_session_id(session_id)}.private"


def default_permissions() -> Permissions:
    """A session started without --permissions: commands are denied unless a policy allows them."""
    return Permissions(commands=CommandPolicy(default="deny"))


def _refuse_sessions_inside(project: str) -> None:
    """The agent works in the project: its session files (permissions included) must be out of reach."""
    base, root = os.path.realpath(sessions_dir()), os.path.realpath(project)
    if base == root or base.startswith(root.rstrip(os.sep) + os.sep):
        raise CliError(
            "the sessions directory may not lie inside the project: set NEXUS_AGENT_SESSIONS_DIR elsewhere", code=2
        )


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _wire(obj: Any) -> Any:
    return msgspec.to_builtins(obj)


def _verify(session: SessionState) -> JsonObject:
    result = verify_chain(session.changes)
    return {"ok": result.ok, "brokenAt": result.broken_at, "finalHash": result.final_hash}


# --- commands -------------------------------------------------------------------------------


def cmd_start(args: argparse.Namespace) -> JsonObject:
    project = Path(args.project).expanduser()
    if not project.is_dir():
        raise CliError(f"project '{args.project}' is not a directory")
    if args.session_id:
        session_id = _session_id(args.session_id)
    else:
        from nexus.domain.ids import new_id  # only `start` pays for the ULID import

        session_id = new_id("ses")
    if args.parent:
        _session_id(args.parent)
    _refuse_sessions_inside(str(project))
    state_path, permissions_path, lock_path = _paths(session_id)
    permissions = default_permissions()
    if args.permissions:
        try:
            permissions = msgspec.json.decode(Path(args.permissions).read_bytes(), type=Permissions)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CliError(f"cannot read permissions '{args.permissions}': {exc}") from None
    with _locked(lock_path):
        if state_path.exists():
            raise CliError(f"session {session_id} already exists", stateFile=str(state_path))
        now = now_iso()
        session = SessionState(
            session_id=session_id,
            project_path=os.path.realpath(project),
            parent_session_id=args.parent,
            backend=args.backend,
            created_at=now,
            updated_at=now,
        )
        write_json(permissions_path, permissions)
        write_state(state_path, session)
    return {
        "ok": True,
        "sessionId": session_id,
        "projectPath": session.project_path,
        "parentSessionId": session.parent_session_id,
        "stateFile": str(state_path),
    }


def _load(session_id: str) -> tuple[SessionState, Permissions, Path]:
    state_path, permissions_path, _ = _paths(session_id)
    try:
        session = read_state(state_path)
    except FileNotFoundError:
        raise CliError(f"no session {session_id} (looked for {state_path})") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CliError(f"session file {state_path} is corrupt: {exc}") from None
    try:
        permissions = msgspec.json.decode(permissions_path.read_bytes(), type=Permissions)
    except FileNotFoundError:
        permissions = default_permissions()
    _refuse_sessions_inside(session.project_path)
    return session, permissions, state_path


def _tool_call(
    session_id: str, tool: str, tool_args: JsonObject, close_as: SessionStatus | None = None
) -> tuple[JsonObject, SessionState]:
    """One hypervisor call on a session, under the session's lock; `close_as` sets the final
    status once the call succeeded."""
    with _locked(_paths(session_id)[2]):
        session, permissions, state_path = _load(session_id)
        hv = Hypervisor(
            workspace=Path(session.project_path),
            permissions=permissions,
            session=session,
            state_file=state_path,
            private_dir=_private_dir(session_id),
        )
        if session.status != "active":
            hv.finished = session.status  # the hypervisor refuses (and records) calls on a closed session
        result = asyncio.run(hv.call(tool, tool_args))
        if result.ok and close_as:
            session.status = close_as
            session.updated_at = now_iso()
        hv.seal_state()  # each invocation is its own process: what it recorded is on disk before it answers
    out: dict[str, Any] = {"ok": result.ok, "sessionId": session_id, "ledgerHash": hv.ledger_hash}
    if result.output:
        out["output"] = result.output
    if not result.ok:
        raise CliError(result.error, **{k: v for k, v in out.items() if k != "ok"}, change=_wire(session.changes[-1]))
    out["change"] = _wire(session.changes[-1])
    return out, session


def cmd_log(args: argparse.Namespace) -> JsonObject:
    return _tool_call(args.session, "note", {"message": args.message})[0]


def cmd_write_file(args: argparse.Namespace) -> JsonObject:
    content = args.content if args.content is not None else sys.stdin.read()
    return _tool_call(args.session, "write_file", {"path": args.path, "content": content})[0]


def cmd_run(args: argparse.Namespace) -> JsonObject:
    if bool(args.cmd) == bool(args.argv):
        raise CliError("give the command either as --cmd LINE or after --", code=2)
    line = args.cmd or shlex.join(args.argv)
    call: dict[str, Any] = {"cmd": line}
    if args.timeout is not None:
        call["timeout_s"] = args.timeout
    out, session = _tool_call(args.session, "run_command", call)
    change = session.changes[-1]
    if isinstance(change, CommandRunChange):
        out["exitCode"] = change.exit_code
        out["outputTruncated"] = change.output_truncated
    return out


def cmd_status(args: argparse.Namespace) -> JsonObject:
    with _locked(_paths(args.session)[2]):
        session, _, state_path = _load(args.session)
    return {
        "ok": True,
        "sessionId": session.session_id,
        "stateFile": str(state_path),
        "ledger": _verify(session),
        "session": _wire(session),
    }


def cmd_finish(args: argparse.Namespace) -> JsonObject:
    status = cast(SessionStatus, args.status)  # one of the parser's choices
    out, session = _tool_call(args.session, "finish", {"summary": args.summary}, close_as=status)
    out.update(status=session.status, ledger=_verify(session))
    return out


# --- entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nexus-agent-tool", description="The Nexus hypervisor as a JSON-only CLI.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_session(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--session", "--session-id", dest="session", required=True)
        p.set_defaults(handler=handler)
        return p

    start = sub.add_parser("start", help="create a session")
    start.add_argument("--project", "--project-path", dest="project", required=True)
    start.add_argument("--parent", "--parent-session-id", dest="parent")
    start.add_argument("--backend", default="external")
    start.add_argument("--session-id", dest="session_id")
    start.add_argument("--permissions", help="a JSON file of nexus.domain.agents.Permissions")
    start.set_defaults(handler=cmd_start)

    with_session("log", cmd_log, "record a note").add_argument("--message", required=True)
    write = with_session("write-file", cmd_write_file, "write a file in the project")
    write.add_argument("--path", required=True)
    write.add_argument("--content")
    run = with_session("run", cmd_run, "run a command in the project")
    run.add_argument("--cmd")
    run.add_argument("--timeout", type=float)
    run.add_argument("argv", nargs=argparse.REMAINDER)
    with_session("status", cmd_status, "show the session and verify its ledger")
    finish = with_session("finish", cmd_finish, "close the session")
    finish.add_argument("--summary", default="finished")
    finish.add_argument("--status", choices=["completed", "error"], default="completed")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "argv", None) and args.argv[0] == "--":
            args.argv = args.argv[1:]
        out = args.handler(args)
        code = 0
    except CliError as exc:
        out = {"ok": False, "error": str(exc), **exc.extra}
        code = exc.code
    except OSError as exc:
        out = {"ok": False, "error": f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")}
        code = 1
    sys.stdout.write(msgspec.json.encode(out).decode() + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())

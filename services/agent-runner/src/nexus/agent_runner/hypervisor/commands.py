"""Commands: parsed with shlex and executed without a shell, under the agent's CommandPolicy.

Each command runs with cwd = workspace, stdin = /dev/null, a scrubbed environment, its own
process group (killed whole on timeout, and after exit so nothing it started in the background
outlives it), a timeout and an output cap. This is a policy boundary, not a sandbox: a command
runs as the runner's user, so the container or Job around the runner is what really isolates
the host. Arguments that name a path outside the workspace are refused as a second line of
defence (a heuristic over argv; an interpreter the policy allows can still reach anything)."""

import asyncio
import os
import shlex
import signal
import time
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Literal

import msgspec

from nexus.agent_runner.hypervisor.errors import Refused
from nexus.domain.agents import CommandPolicy

Decision = Literal["allow", "deny", "ask"]

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "ash", "busybox", "pwsh"})
# Programs that run another program from their arguments: a shell behind one is still a shell.
WRAPPERS = frozenset(
    {"env", "nice", "nohup", "timeout", "stdbuf", "setsid", "xargs", "time", "sudo", "doas", "chroot",
     "unshare", "nsenter", "exec", "command", "ionice", "taskset", "flock", "watch", "script", "strace", "find"}
)
_ALLOWED_OUTSIDE = frozenset({"/dev/null"})
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")
TIMEOUT_EXIT_CODE = 124  # as coreutils `timeout` reports it
_DRAIN_GRACE_S = 1.0


class CommandOutcome(msgspec.Struct, kw_only=True):
    exit_code: int
    output: bytes
    total_bytes: int
    truncated: bool
    timed_out: bool
    duration_ms: int


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def parse(cmd: str) -> list[str]:
    try:
        argv = shlex.split(cmd)
    except ValueError as exc:
        raise Refused("invalid-command", f"cannot parse the command line: {exc}") from None
    if not argv:
        raise Refused("invalid-command", "the command is empty")
    if any("\x00" in token for token in argv):
        raise Refused("invalid-command", "the command contains a NUL byte")
    return argv


def _first_word(pattern: str) -> str:
    return pattern.split(maxsplit=1)[0] if pattern.strip() else ""


def decide(cmd: str, argv: list[str], policy: CommandPolicy, ask: list[str]) -> tuple[Decision, str]:
    """The policy's verdict and the pattern behind it. Deny wins, and is matched loosely (raw
    text, argv joined, program by basename); allow is matched on argv joined only, so a
    workspace script named `./git` does not pass for `git *`."""
    line = " ".join(argv)
    loose = {cmd.strip(), line, " ".join([os.path.basename(argv[0]), *argv[1:]])}
    for pattern in policy.deny:
        if any(fnmatchcase(form, pattern) for form in loose):
            return "deny", pattern
    for pattern in policy.allow:
        if fnmatchcase(line, pattern):
            return "allow", pattern
    if "command" in ask:
        return "ask", "command"
    return policy.default, f"default={policy.default}"


def check_shell(argv: list[str], policy: CommandPolicy) -> None:
    """No shell unless an allow pattern names that shell as its program."""
    names = [os.path.basename(argv[0])]
    if names[0] in WRAPPERS:
        names += [os.path.basename(token) for token in argv[1:]]
    shells = [name for name in names if name in SHELLS]
    if not shells:
        return
    line = " ".join(argv)
    explicit = any(_first_word(p) in (shells[0], argv[0]) and fnmatchcase(line, p) for p in policy.allow)
    if not explicit:
        raise Refused("shell-not-allowed", f"{shells[0]} is a shell; commands run without one unless the policy allows it by name")


def check_paths(argv: list[str], root: str, program_dirs: list[str]) -> None:
    """Refuse arguments that point outside the workspace: absolute paths, `..` escapes, `~`.
    The program itself may be named by absolute path only inside a PATH directory."""
    program = argv[0]
    if program.startswith("/") and os.path.dirname(os.path.realpath(program)) not in program_dirs:
        if not _inside(os.path.realpath(program), root):
            raise Refused("path-outside-workspace", f"{program!r} is neither on PATH nor in the workspace")
    for index, token in enumerate(argv):
        candidates = [token]
        if "=" in token:
            candidates.append(token.split("=", 1)[1])
        if token.startswith("-") and not token.startswith("--") and len(token) > 2:
            candidates.append(token[2:])  # glued short options: -C/tmp
        for value in candidates:
            if index == 0 and value is token and value.startswith("/"):
                continue  # a system program by absolute path
            if value.startswith("~"):
                raise Refused("path-outside-workspace", f"{token!r}: home-relative paths are not allowed")
            if value in _ALLOWED_OUTSIDE:
                continue
            if value.startswith("/") or ".." in value.split("/"):
                if not _inside(os.path.realpath(os.path.join(root, value)), root):
                    raise Refused("path-outside-workspace", f"{token!r} points outside the workspace")


def check_git(argv: list[str], can_merge: bool) -> str | None:
    """Git verbs the runner owns. Returns the approval action a `git merge` needs, if any."""
    if os.path.basename(argv[0]) != "git":
        return None
    verb = _git_verb(argv[1:])
    if verb == "push":
        raise Refused("not-permitted", "the runner pushes the run branch itself; git push is not a tool")
    if verb == "merge":
        if not can_merge:
            raise Refused("not-permitted", "this agent may not merge (can_merge is false)")
        return "merge"
    return None


def _git_verb(args: list[str]) -> str:
    takes_value = {"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path", "--config-env"}
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in takes_value:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return ""


def default_base_env(workspace: str) -> dict[str, str]:
    """PATH, LANG, git identity from the runner's environment; HOME is the workspace."""
    env = {key: os.environ[key] for key in _ENV_KEEP if key in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = workspace
    return env


def program_dirs(env: Mapping[str, str]) -> list[str]:
    return [os.path.realpath(entry) for entry in env.get("PATH", "").split(os.pathsep) if entry]


def scrub_env(base: Mapping[str, str], workspace: str, secret_values: list[str]) -> dict[str, str]:
    """No NEXUS_* variables, nothing holding a secret, a PATH that cannot reach the workspace."""
    env = {
        key: value
        for key, value in base.items()
        if not key.upper().startswith("NEXUS") and not any(secret in value for secret in secret_values)
    }
    path = [
        entry
        for entry in env.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep)
        if entry.startswith("/") and not _inside(os.path.realpath(entry), workspace)
    ]
    env["PATH"] = os.pathsep.join(path)
    env.setdefault("HOME", workspace)
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


class _Capture(asyncio.Protocol):
    def __init__(self, cap: int, done: asyncio.Future[None]) -> None:
        self.cap = cap
        self.buf = bytearray()
        self.total = 0
        self.done = done

    def data_received(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap - len(self.buf)
        if room > 0:
            self.buf += data[:room]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.returncode is None:
        try:
            proc.kill()  # the leader, should the group be gone already
        except ProcessLookupError:
            pass


async def execute(argv: list[str], *, cwd: str, env: Mapping[str, str], timeout_s: float, max_output: int) -> CommandOutcome:
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd, stderr=write_fd, start_new_session=True,
        )
    except FileNotFoundError:
        os.close(read_fd)
        raise Refused("command-not-found", f"'{argv[0]}' was not found on PATH") from None
    except PermissionError:
        os.close(read_fd)
        raise Refused("not-executable", f"'{argv[0]}' is not executable") from None
    finally:
        os.close(write_fd)
    done: asyncio.Future[None] = loop.create_future()
    transport, capture = await loop.connect_read_pipe(
        lambda: _Capture(max_output, done), os.fdopen(read_fd, "rb", buffering=0)
    )
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        timed_out = True
    finally:
        _kill_group(proc)  # also whatever it left running in the background
        await proc.wait()
    try:
        # Output still in the pipe; a grandchild that left the group may hold it open.
        await asyncio.wait_for(asyncio.shield(done), _DRAIN_GRACE_S)
    except TimeoutError:
        pass
    transport.close()
    return CommandOutcome(
        exit_code=TIMEOUT_EXIT_CODE if timed_out else (proc.returncode if proc.returncode is not None else -1),
        output=bytes(capture.buf),
        total_bytes=capture.total,
        truncated=capture.total > len(capture.buf),
        timed_out=timed_out,
        duration_ms=int((time.monotonic() - started) * 1000),
    )

"""Commands: parsed with shlex, read by the command parser (cmdparse), judged by the agent's
CommandPolicy, and executed without a shell inside the OS sandbox (sandbox).

Each command runs with cwd = workspace, stdin = /dev/null, a scrubbed environment (never the
runner's), the secrets it names by `NAME=${secret:X}` as environment variables (never in argv), its
own process group (killed whole on timeout and after exit), its own PID namespace when the sandbox
is bubblewrap (so a child that calls setsid() dies with it too), a timeout and an output cap."""

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from fnmatch import fnmatchcase
from typing import Literal

import msgspec

from nexus.agent_runner.hypervisor import cmdparse, proctree, safegit, sandbox
from nexus.agent_runner.hypervisor.errors import Refused
from nexus.domain.agents import CommandPolicy

Decision = Literal["allow", "deny", "ask"]
# Asked while a command runs: the cap it passed ("pids", "memory", "disk"), or "" while none.
Guard = Callable[[], Awaitable[str]]

_ENV_KEEP = safegit.ENV_KEEP
TIMEOUT_EXIT_CODE = 124  # as coreutils `timeout` reports it
_DRAIN_GRACE_S = 1.0
CAP_POLL_S = 0.2
_EXPLICIT_KINDS = {
    "shell": "shell-not-allowed",
    "interpreter": "interpreter-not-allowed",
    "workspace": "workspace-program-not-allowed",
}
_KIND_WORDS = {
    "shell": "a shell",
    "interpreter": "an interpreter or build tool",
    "workspace": "a program from the workspace",
}


class CommandOutcome(msgspec.Struct, kw_only=True):
    exit_code: int
    output: bytes  # up to the cap plus the slack asked for (so secrets are masked before the cut)
    total_bytes: int
    truncated: bool
    timed_out: bool
    duration_ms: int
    cap_reached: str = ""  # "pids", "memory" or a watch's word ("disk"): the command met a cap, and was ended


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def parse(cmd: str) -> list[str]:
    return cmdparse.split(cmd)


def _first_word(pattern: str) -> str:
    return pattern.split(maxsplit=1)[0] if pattern.strip() else ""


def _named(layer: cmdparse.Layer, pattern: str) -> bool:
    """An allow pattern that names this program literally as its first word, and matches."""
    first = _first_word(pattern)
    if any(ch in first for ch in "*?["):
        return False
    names = {layer.argv[0]} if layer.kind == "workspace" else {layer.argv[0], layer.name}
    line = " ".join([first, *layer.argv[1:]])
    return first in names and fnmatchcase(line, pattern)


def decide(cmd: str, layers: list[cmdparse.Layer], policy: CommandPolicy, ask: list[str]) -> tuple[Decision, str]:
    """The policy's verdict and the pattern behind it. Deny is matched on every layer (a wrapper
    does not hide what it runs) and on the raw text; allow must hold for the program that finally
    runs and for find/xargs around it; shells, interpreters and workspace programs run only when
    an allow pattern names them; a command matching nothing follows `default` (deny if unset)."""
    for layer in layers:
        loose = {
            cmd.strip(),
            layer.line,
            " ".join([layer.name, *layer.argv[1:]]),
            " ".join([layer.real, *layer.argv[1:]]),
        }
        if layer.via:  # find/xargs add arguments at run time: `xargs rm` is `rm <something>`
            loose |= {form + " {}" for form in loose}
        for pattern in policy.deny:
            if any(fnmatchcase(form, pattern) for form in loose):
                return "deny", pattern
    needed = [
        layers[-1],
        *[layer for layer in layers[:-1] if layer.real in ("find", "xargs") or layer.name in ("find", "xargs")],
    ]
    verdicts: list[tuple[Decision, str]] = []
    for layer in needed:
        if layer.kind in _EXPLICIT_KINDS:
            named = next((p for p in policy.allow if _named(layer, p)), None)
            if named is None:
                raise Refused(
                    _EXPLICIT_KINDS[layer.kind],
                    f"{layer.name} runs code it is given ({_KIND_WORDS[layer.kind]}); "
                    "it runs only when an allow pattern names it as its first word",
                )
            verdicts.append(("allow", named))
            continue
        loose_pattern = next((p for p in policy.allow if fnmatchcase(layer.line, p)), None)
        if loose_pattern is not None:
            verdicts.append(("allow", loose_pattern))
        elif "command" in ask:
            verdicts.append(("ask", "command"))
        else:
            verdicts.append((policy.default, f"default={policy.default}"))
    for wanted in ("deny", "ask"):
        for verdict in verdicts:
            if verdict[0] == wanted:
                return verdict
    return verdicts[0]


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


def command_env(env: Mapping[str, str]) -> dict[str, str]:
    """What an agent command starts from: the scrubbed environment, with git reading no global or
    system configuration and taking no optional locks."""
    keep = {key: value for key, value in env.items() if key in _ENV_KEEP or key == "GIT_TERMINAL_PROMPT"}
    return {**keep, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_OPTIONAL_LOCKS": "0"}


def render(outcome: CommandOutcome, cap: int, mask: Callable[[str], str], mask_cut: Callable[[str], str]) -> str:
    """The output as the model sees it: masked first, then cut to the cap."""
    text = mask(outcome.output.decode("utf-8", errors="replace"))
    if outcome.total_bytes > len(outcome.output):
        text = mask_cut(text)
    data = text.encode()
    return data[:cap].decode("utf-8", errors="ignore") if len(data) > cap else text


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


async def execute(
    argv: list[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    timeout_s: float,
    max_output: int,
    confine: tuple[str, sandbox.Spec] | None = None,
    slack: int = 0,
    guard: Guard | None = None,
    limits: sandbox.Limits | None = None,
) -> CommandOutcome:
    """Run argv (confined by `confine` = (mode, spec) when given; else within `limits`' rlimits when
    given); keep max_output + slack bytes; end it when its cgroups, the watch of what they could not hold,
    or `guard` say it passed a cap."""
    loop = asyncio.get_running_loop()
    prepared = sandbox.prepare(confine[0], argv, dict(env), confine[1]) if confine else None
    preexec = prepared.preexec if prepared else sandbox.rlimited(limits) if limits else None
    run_argv, run_env = (prepared.argv, prepared.env) if prepared else (argv, dict(env))
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *run_argv,
            cwd=cwd,
            env=run_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            start_new_session=True,
            preexec_fn=preexec,
        )
    except FileNotFoundError:
        os.close(read_fd)
        if prepared:
            prepared.cleanup()
        raise Refused("command-not-found", f"{os.path.basename(argv[0])[:120]} was not found on PATH") from None
    except (OSError, subprocess.SubprocessError) as exc:  # SubprocessError: the pre-exec step failed
        os.close(read_fd)
        if prepared:
            prepared.cleanup()
        raise Refused(
            "not-executable",
            f"{os.path.basename(argv[0])[:120]} could not be started ({getattr(exc, 'strerror', None) or exc})",
        ) from None
    finally:
        os.close(write_fd)
    done: asyncio.Future[None] = loop.create_future()
    transport, capture = await loop.connect_read_pipe(
        lambda: _Capture(max_output + slack, done), os.fdopen(read_fd, "rb", buffering=0)
    )
    guards = ([guard] if guard else []) + (cap_guards(prepared, proc.pid) if prepared else [])
    timed_out, capped = False, ""
    try:
        capped = await _wait(proc, timeout_s, guards)
    except TimeoutError:
        timed_out = True
    finally:
        _kill_group(proc)  # also whatever it left running in the background
        await proc.wait()
        if prepared:  # a private HOME of any size to remove: in a thread, never on the runner's loop
            await asyncio.to_thread(prepared.cleanup)
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
        truncated=capture.total > max_output,
        timed_out=timed_out,
        duration_ms=int((time.monotonic() - started) * 1000),
        cap_reached=capped,
    )


def cap_guards(prepared: sandbox.Prepared, pid: int) -> list[Guard]:
    """The watches of a confined process's caps: its cgroups' counters, or its process tree where no
    cgroup holds a cap (started as `pid`)."""
    guards = [_sync(prepared.caps.reached)] if prepared.caps else []
    if prepared.unbounded:
        guards.append(proctree.Watch(pid, prepared.unbounded).reached)
    return guards


def _sync(check: Callable[[], str]) -> Guard:
    async def guard() -> str:
        return check()

    return guard


async def first_reached(guards: list[Guard]) -> str:
    for guard in guards:
        if reached := await guard():
            return reached
    return ""


async def _wait(proc: asyncio.subprocess.Process, timeout_s: float, guards: list[Guard]) -> str:
    """Until the command exits or meets a cap (a fork bomb, a memory bomb, a disk filler, or a program
    that would take more than its share: ended then, not at its timeout). The cap it met, or ""."""
    if not guards:
        await asyncio.wait_for(proc.wait(), timeout_s)
        return ""
    waiter = asyncio.ensure_future(proc.wait())
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            waiter.cancel()
            raise TimeoutError
        done, _ = await asyncio.wait({waiter}, timeout=min(left, CAP_POLL_S))
        if done:
            return await first_reached(guards)
        if reached := await first_reached(guards):
            waiter.cancel()
            return reached

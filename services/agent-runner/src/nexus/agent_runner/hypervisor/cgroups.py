"""Caps on what one command uses at once — processes (and threads), memory — whoever the runner
runs as, so that a fork bomb or a memory bomb ends the command and not the machine.

RLIMIT_NPROC counts the processes of a user, and the kernel never applies it to root (uid 0 is
exempt, in a user namespace mapped to it too); RLIMIT_AS bounds each process, not their sum. So each
command gets cgroups of its own, made beside the runner's (cgroup v2: the runner's own cgroup, when
the controllers are enabled below it; v1: each controller's hierarchy): `pids.max` (a fork past it
fails with EAGAIN, counted in `pids.events`) and a memory limit (past it the kernel's OOM killer
ends a process of the command, counted as `oom_kill`). The hypervisor ends the command when either
is reached. After the command, whatever is left in them (a child that left the process group) is
killed and the cgroups removed.

Where no cgroup can be made (a read-only cgroup file system, as in most containers), the rlimits are
what is left: the process cap holds for every uid but root, and the images run as uid 10001."""

import contextlib
import os
import secrets
import signal
import time
from functools import cache

_ROOT = "/sys/fs/cgroup"
_PREFIX = "nexus-cmd-"
_KILL_PASSES_S = 5.0
# controller: (the file its limit is written to, v1 then v2; the file and key counting its refusals)
_CONTROLLERS = {
    "pids": (("pids.max", "pids.max"), ("pids.events", "max")),
    "memory": (("memory.limit_in_bytes", "memory.max"), ("memory.events", "oom_kill")),
}


def _own_paths(controller: str) -> list[str]:
    """Directories where this process's cgroup for `controller` lives, v2 first, then v1."""
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            found.append(os.path.join(_ROOT, path.lstrip("/")))
        elif controller in controllers.split(","):
            found.append(os.path.join(_ROOT, controllers, path.lstrip("/")))
    return found


@cache
def parent(controller: str) -> str | None:
    """The directory this process may make `controller` cgroups in, or None: probed once, by making one."""
    for here in _own_paths(controller):
        probe = os.path.join(here, _PREFIX + "probe-" + secrets.token_hex(4))
        try:
            os.mkdir(probe)
        except OSError:
            continue
        usable = any(os.path.exists(os.path.join(probe, name)) for name in _CONTROLLERS[controller][0])
        with contextlib.suppress(OSError):
            os.rmdir(probe)
        if usable:
            return here
    return None


class _Group:
    def __init__(self, where: str) -> None:
        self.path = os.path.join(where, _PREFIX + secrets.token_hex(8))
        os.mkdir(self.path, 0o700)

    def limit(self, controller: str, value: int) -> None:
        for name in _CONTROLLERS[controller][0]:
            if os.path.exists(os.path.join(self.path, name)):
                with open(os.path.join(self.path, name), "w") as fh:
                    fh.write(str(value))
                return

    def counted(self, controller: str) -> bool:
        name, key = _CONTROLLERS[controller][1]
        if controller == "memory" and not os.path.exists(os.path.join(self.path, name)):
            name = "memory.oom_control"  # v1
        try:
            with open(os.path.join(self.path, name)) as fh:
                for line in fh:
                    word, _, value = line.partition(" ")
                    if word == key and value.strip() != "0":
                        return True
        except OSError:
            pass
        return False

    def close(self) -> None:
        kill = os.path.join(self.path, "cgroup.kill")  # v2: the kernel ends them all at once
        with contextlib.suppress(OSError):
            if os.path.exists(kill):
                with open(kill, "w") as fh:
                    fh.write("1")
        deadline = time.monotonic() + _KILL_PASSES_S
        while True:
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return  # a process that will not die: the cgroup stays, and its caps still hold it
            for pid in self._members():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def _members(self) -> list[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as fh:
                return [int(line) for line in fh if line.strip()]
        except OSError:
            return []


class CommandCaps:
    """One command's cgroups: `enter` runs in the child before exec; `reached` names a cap a process
    of the command met ("" if none); `close` ends what is left and removes them."""

    def __init__(self, limits: dict[str, int]) -> None:
        self.limits = limits
        self._groups: dict[str, _Group] = {}  # controller: its cgroup (one for all of them under v2)
        try:
            for controller, value in limits.items():
                where = parent(controller)
                if where is None:
                    continue
                group = next((g for g in self._groups.values() if os.path.dirname(g.path) == where), None)
                group = group or _Group(where)
                group.limit(controller, value)
                self._groups[controller] = group
        except OSError:
            self.close()
            self._groups = {}

    @property
    def active(self) -> bool:
        return bool(self._groups)

    @property
    def controllers(self) -> set[str]:
        """The controllers whose cap a cgroup holds for this command."""
        return set(self._groups)

    def enter(self) -> None:
        for group in {id(g): g for g in self._groups.values()}.values():
            with open(os.path.join(group.path, "cgroup.procs"), "w") as fh:
                fh.write("0")  # the writing process itself

    def reached(self) -> str:
        return next((c for c, g in self._groups.items() if g.counted(c)), "")

    def close(self) -> None:
        for group in {id(g): g for g in self._groups.values()}.values():
            group.close()

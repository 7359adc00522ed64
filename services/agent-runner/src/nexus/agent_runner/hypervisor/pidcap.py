"""A cap on how many processes (and threads) one command runs at once, whoever the runner runs as.

RLIMIT_NPROC counts the processes of a user, and the kernel never applies it to root (uid 0 is
exempt, in a user namespace mapped to it too): a runner that runs as root would let a fork bomb
fill the machine's process table. So each command gets a pids cgroup of its own, made beside the
runner's (cgroup v2: the runner's own cgroup, when the pids controller is enabled below it; v1:
the pids hierarchy), with `pids.max`: a fork past it fails with EAGAIN, `pids.events` counts the
refusals, and the command is ended when one happens. After the command, whatever is left in the
cgroup (a child that left the process group) is killed and the cgroup removed.

Where no cgroup can be made (a read-only cgroup file system, as in most containers), the rlimit is
what is left: it holds for every uid but root, and the images run as uid 10001."""

import contextlib
import os
import secrets
import signal
import time
from functools import cache

_ROOT = "/sys/fs/cgroup"
_PREFIX = "nexus-cmd-"
_KILL_PASSES_S = 5.0


def _own_paths() -> list[str]:
    """Directories where this process's pids cgroup lives, v2 first, then v1."""
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
        elif "pids" in controllers.split(","):
            found.append(os.path.join(_ROOT, controllers, path.lstrip("/")))
    return found


@cache
def parent() -> str | None:
    """The directory this process may make pids cgroups in, or None: probed once, by making one."""
    for here in _own_paths():
        probe = os.path.join(here, _PREFIX + "probe-" + secrets.token_hex(4))
        try:
            os.mkdir(probe)
        except OSError:
            continue
        usable = os.path.exists(os.path.join(probe, "pids.max"))
        with contextlib.suppress(OSError):
            os.rmdir(probe)
        if usable:
            return here
    return None


class PidsCap:
    """One command's pids cgroup: `enter` runs in the child before exec; `refused` tells whether a
    fork failed at the cap; `close` ends what is left and removes it."""

    def __init__(self, where: str, limit: int) -> None:
        self.path = os.path.join(where, _PREFIX + secrets.token_hex(8))
        self.limit = limit
        os.mkdir(self.path, 0o700)
        with open(os.path.join(self.path, "pids.max"), "w") as fh:
            fh.write(str(limit))

    def enter(self) -> None:
        with open(os.path.join(self.path, "cgroup.procs"), "w") as fh:
            fh.write("0")  # the writing process itself

    def refused(self) -> bool:
        try:
            with open(os.path.join(self.path, "pids.events")) as fh:
                for line in fh:
                    key, _, value = line.partition(" ")
                    if key == "max" and value.strip() != "0":
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
                    return  # a process that will not die: the cgroup stays, and its cap still holds it
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


def open_cap(limit: int) -> PidsCap | None:
    where = parent()
    if where is None:
        return None
    try:
        return PidsCap(where, limit)
    except OSError:
        return None

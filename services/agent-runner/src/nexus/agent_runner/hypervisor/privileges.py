"""A command gives up every capability before it runs, in the sandbox modes without a user namespace.

bwrap drops them itself (`--cap-drop ALL`, inside a namespace of its own). The `landlock` and `none`
modes run the command in the runner's own namespaces: a runner started as root (a container's root
under Docker's default seccomp, or this machine's) handed its commands all of root's capabilities —
changing routes and firewall rules over netlink, raw sockets, chown and setuid, mounting where the
mode allows — none of which Landlock judges. Here, in the child before it executes the command:
- root gets no capabilities back on exec (securebits NOROOT and NO_CAP_AMBIENT_RAISE, locked);
- the bounding set is emptied, so no setuid-root or file-capability program can regain one;
- the ambient, inheritable, permitted and effective sets are cleared;
- no_new_privs is set (setuid programs run as their caller).
A runner that is not root has nothing to drop: the steps that need a privilege are skipped for it, and
what it has (nothing) is cleared as for root. A command needs no capability: builds, tests, git."""

import ctypes
import errno
from collections.abc import Callable
from functools import cache

_PR_CAPBSET_DROP = 24
_PR_SET_SECUREBITS = 28
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
# NOROOT and NO_CAP_AMBIENT_RAISE, each with its lock bit: root's exec grants nothing, and nobody
# (the command included) can turn that back.
_SECUREBITS = (1 << 0) | (1 << 1) | (1 << 6) | (1 << 7)
_CAPABILITY_VERSION_3 = 0x20080522
# The same, as a program: for a command started under a wrapper that needs root's capabilities itself
# (the `none` mode's pid namespace), given up between the wrapper and the command.
SETPRIV = [
    "/usr/bin/setpriv",
    "--no-new-privs",
    "--bounding-set=-all",
    "--inh-caps=-all",
    "--ambient-caps=-all",
    "--securebits=+noroot,+noroot_locked",
    "--",
]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


@cache
def last_capability() -> int:
    """The highest capability this kernel knows (read in the runner, where /proc is in sight)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 63  # every bit a capability set holds; dropping one the kernel lacks fails harmlessly


def dropper(libc: ctypes.CDLL) -> Callable[[], None]:
    """The child's step (run after fork, before exec) that gives up every capability; built in the runner,
    so the child only makes system calls."""
    last = last_capability()
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    nothing = (_CapData * 2)()

    def drop() -> None:
        privileged = libc.prctl(_PR_SET_SECUREBITS, _SECUREBITS, 0, 0, 0) == 0
        if privileged:
            for cap in range(last + 1):
                libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
        libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        if libc.capset(ctypes.byref(header), ctypes.byref(nothing)) != 0:
            raise OSError(ctypes.get_errno(), "capset failed: the command would keep capabilities")
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno() or errno.EPERM, "PR_SET_NO_NEW_PRIVS failed")

    return drop

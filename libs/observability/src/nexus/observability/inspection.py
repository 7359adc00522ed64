"""A process that holds a secret closes itself to inspection by other processes of its own user.

A process of the same user (an agent's command in the `none` sandbox mode, or an external CLI there)
may otherwise read `/proc/<pid>/environ` (the environment it was started with: a cold runner's run
credential and secrets), `/proc/<pid>/mem` and attach with ptrace (whatever the process keeps in
memory: the secrets, the NATS credential, a worker's run-signing key), because the kernel lets a
process inspect its own user's processes unless one is marked not dumpable. Not dumpable, the
process's `/proc/<pid>` files belong to root and the kernel refuses access to its memory, environment
and ptrace to anyone without CAP_SYS_PTRACE. A program it executes is dumpable again (the kernel resets
the mark on exec), so the commands it runs are untouched; only core dumps of this process are lost."""

import ctypes
from functools import cache

_PR_SET_DUMPABLE = 4


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)  # loaded once: a zygote's children find it loaded


def close_to_inspection() -> bool:
    """Mark this process not dumpable; False where the kernel refused (it never does on Linux)."""
    return bool(_libc().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)

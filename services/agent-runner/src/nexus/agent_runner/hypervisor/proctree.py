"""The caps of a command that no cgroup holds (a read-only or undelegated cgroup file system), watched
from outside: its processes (and threads, as `pids.max` counts them) and their resident memory together.

The kernel still refuses what it can alone — each process's address space (RLIMIT_AS), and, for root,
the processes of a pid namespace of the command's own (sandbox.pid_namespaces) — and this watch ends
the command when the tree as a whole passes a cap. It reads /proc: every process whose parents lead to
the command's first process, so a child that called setsid() is counted while it stays inside the
command's pid namespace (bwrap, or the runner's own where root). Memory a process holds in a `memfd`
without mapping it is resident in no process: the watch counts the memfds the tree holds open too."""

import asyncio
import os

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stats() -> dict[int, tuple[int, int, int]]:
    """pid: (parent pid, threads, resident pages) of every process now."""
    found: dict[int, tuple[int, int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        # after the name: state, ppid, ... num_threads is field 20 and rss field 24 of stat(5)
        found[int(entry)] = (int(fields[1]), int(fields[17]), int(fields[21]))
    return found


def _memfds(pid: int, seen: set[tuple[int, int]]) -> int:
    """Bytes held by the memfds `pid` has open that were not counted yet (one file, many descriptors)."""
    held = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        path = f"/proc/{pid}/fd/{fd}"
        try:
            if not os.readlink(path).startswith("/memfd:"):
                continue
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            held += st.st_blocks * 512
    return held


def usage(root: int) -> tuple[int, int]:
    """(tasks, bytes of memory) of the process `root` and all its descendants: resident, and in memfds."""
    stats = _stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    tasks = resident = 0
    stack = [root] if root in stats else []
    memfds: set[tuple[int, int]] = set()
    while stack:
        pid = stack.pop()
        _, threads, pages = stats[pid]
        tasks += threads
        resident += pages * _PAGE + _memfds(pid, memfds)
        stack.extend(children.get(pid, ()))
    return tasks, resident


class Watch:
    """The caps `limits` ({"pids": n, "memory": bytes}) of the tree under `root`: `reached` names the
    first one it passed ("" while none)."""

    def __init__(self, root: int, limits: dict[str, int]) -> None:
        self.root = root
        self.limits = limits

    async def reached(self) -> str:
        tasks, resident = await asyncio.to_thread(usage, self.root)
        if "pids" in self.limits and tasks >= self.limits["pids"]:
            return "pids"
        if "memory" in self.limits and resident > self.limits["memory"]:
            return "memory"
        return ""

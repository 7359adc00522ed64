"""Where the CPU goes during a shape: each service's own CPU seconds (from /proc), and the rest of
the machine's busy time — the runners, mostly, on a box doing nothing else (say if it was shared)."""

import os

TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int, reaped: bool = False) -> float:
    """A process's own CPU (utime + stime), or with `reaped` that of its children it has waited for
    (cutime + cstime: the zygote's are the forked runners, with their git children; PostgreSQL's
    postmaster's are backends that ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        first = 13 if reaped else 11
        return (int(fields[first]) + int(fields[first + 1])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _busy_s() -> float:
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    idle = cpu[3] + cpu[4]  # idle + iowait
    return (sum(cpu[:8]) - idle) / TICK


def _children(pid: int) -> list[int]:
    """Direct children that are part of the service (granian's workers, the worker's zygote), not runners."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/cmdline", "rb") as f:
                runner = b"agent_runner" in f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and not runner:
            out.append(int(name))
    return out


class CpuMeter:
    """Per service: its processes' own CPU (children that appeared during the shape — PostgreSQL
    backends FerretDB opened under load — included from their start), and, apart, the CPU of children
    that ended and were waited for (the zygote's runners with their git children, under the worker)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.services = {**pids, "bench client": os.getpid()}
        self._start: dict[int, float] = {}
        self._start_reaped: dict[str, float] = {}
        self._busy = 0.0

    def _pids(self, name: str) -> list[int]:
        # The bench client's children are the services themselves: counted under their names, not twice.
        pid = self.services[name]
        return [pid] if name == "bench client" else [pid, *_children(pid)]

    def _reaped(self, name: str) -> float:
        return sum(_proc_cpu_s(pid, reaped=True) for pid in self._pids(name))

    def start(self) -> None:
        self._start = {pid: _proc_cpu_s(pid) for name in self.services for pid in self._pids(name)}
        self._start_reaped = {name: self._reaped(name) for name in self.services}
        self._busy = _busy_s()

    def stop(self) -> dict:
        used: dict = {
            name: round(sum(_proc_cpu_s(pid) - self._start.get(pid, 0.0) for pid in self._pids(name)), 2)
            for name in self.services
        }
        reaped = {name: round(self._reaped(name) - self._start_reaped[name], 2) for name in self.services}
        busy = _busy_s() - self._busy
        used["machine_busy"] = round(busy, 2)
        used["rest_runners_and_others"] = round(busy - sum(used[n] for n in self.services) - sum(reaped.values()), 2)
        used["reaped_children"] = {name: r for name, r in reaped.items() if r > 0}
        return used

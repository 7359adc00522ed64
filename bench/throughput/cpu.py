"""Where the CPU goes during a shape: each service's own CPU seconds (from /proc), and the rest of
the machine's busy time — the runners, mostly, on a box doing nothing else (say if it was shared)."""

import os

TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
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
    def __init__(self, pids: dict[str, int]) -> None:
        self.services = {**pids, "bench client": os.getpid()}
        self.pids: dict[str, list[int]] = {}
        self._start: dict[str, float] = {}

    def _cpu(self, name: str) -> float:
        return sum(_proc_cpu_s(pid) for pid in self.pids[name])

    def start(self) -> None:
        # The bench client's children are the services themselves: counted under their names, not twice.
        self.pids = {name: [pid] if name == "bench client" else [pid, *_children(pid)] for name, pid in self.services.items()}
        self._start = {name: self._cpu(name) for name in self.pids} | {"_busy": _busy_s()}

    def stop(self) -> dict[str, float]:
        used = {name: round(self._cpu(name) - self._start[name], 2) for name in self.pids}
        busy = _busy_s() - self._start["_busy"]
        used["machine_busy"] = round(busy, 2)
        used["rest_runners_and_others"] = round(busy - sum(v for k, v in used.items() if k != "machine_busy"), 2)
        return used

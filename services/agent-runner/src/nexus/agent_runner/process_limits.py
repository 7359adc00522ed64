"""The runner's own process limits, set by the worker (memory, CPU time, open files), turned into
a clean end with a reason an operator can act on instead of a crash with a traceback.

- CPU: the worker sets the soft limit at the run's CPU budget and the hard limit a few seconds
  above it. The kernel sends SIGXCPU at the soft limit; the runner then stops at its next step
  like any other limit (partial work committed, session ended). Only a runner that cannot reach a
  step boundary in those few seconds is killed by the hard limit (the worker then reports SIGKILL).
- Memory: an allocation beyond the address-space limit raises MemoryError; a small reserve of address
  space taken at start is released first, so reporting the end has room to run. The reserve is an
  anonymous mapping never touched: it counts against the limit (which is on address space) but costs
  no page until used — a zero-filled buffer cost every run ~4 ms of page faults.
- Open files: EMFILE from anywhere in the runner is named as the open-files limit.
"""

import errno
import mmap
import resource

_RESERVE_BYTES = 8 << 20


def _soft(kind: int) -> int | None:
    soft, _ = resource.getrlimit(kind)
    return None if soft == resource.RLIM_INFINITY else soft


class ProcessLimits:
    def __init__(self) -> None:
        self._reserve: mmap.mmap | None = mmap.mmap(-1, _RESERVE_BYTES)
        # Read once, at start: Linux raises the soft CPU limit by a second each time it sends SIGXCPU.
        self._cpu_s = _soft(resource.RLIMIT_CPU)

    def cpu_reason(self) -> str:
        seconds = self._cpu_s
        return f"CPU time limit of {seconds} s reached" if seconds is not None else "CPU time limit reached"

    def describe(self, exc: BaseException) -> str | None:
        """The limit `exc` means, in words; None when it is not a process limit."""
        if isinstance(exc, MemoryError):
            if self._reserve is not None:  # room for what comes next: logging, the final status
                self._reserve.close()
                self._reserve = None
            size = _soft(resource.RLIMIT_AS)
            return f"memory limit of {size >> 20} MiB reached" if size is not None else "out of memory"
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            files = _soft(resource.RLIMIT_NOFILE)
            return (
                f"open-files limit of {files} reached"
                if exc.errno == errno.EMFILE
                else "the system's open-files table is full"
            )
        cause = exc.__cause__ or exc.__context__
        return self.describe(cause) if cause is not None and cause is not exc else None

"""Keeps the local stack up: a crashed process (a service, nats-server, FerretDB) is restarted with
backoff and the restart is printed; a crash loop (too many restarts in a window) gives up with a
message that says which process and where its log is."""

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO


class CrashLoop(Exception):
    pass


@dataclass
class _Watch:
    start: Callable[[], subprocess.Popen]
    proc: subprocess.Popen
    log_hint: str = ""
    restarts: list[float] = field(default_factory=list)  # when each restart happened
    due: float | None = None  # when the pending restart may happen


@dataclass
class Supervisor:
    out: IO[str] = sys.stderr
    max_restarts: int = 5  # within `window_s`; one more is a crash loop
    window_s: float = 60.0
    base_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    watched: dict[str, _Watch] = field(default_factory=dict)

    def watch(
        self, name: str, proc: subprocess.Popen, start: Callable[[], subprocess.Popen], log_hint: str = ""
    ) -> None:
        self.watched[name] = _Watch(start, proc, log_hint)

    def forget(self, name: str) -> None:
        self.watched.pop(name, None)

    def check(self) -> list[str]:
        """Restart what exited and is due; returns the names restarted. Raises CrashLoop."""
        now = self.clock()
        restarted = []
        for name, w in self.watched.items():
            code = w.proc.poll()
            if code is None:
                continue
            recent = [t for t in w.restarts if now - t < self.window_s]
            if w.due is None:
                if len(recent) >= self.max_restarts:
                    raise CrashLoop(
                        f"{name} keeps crashing (exit code {code}; "
                        f"{len(recent)} restarts in the last {self.window_s:.0f}s): "
                        f"giving up{'; see ' + w.log_hint if w.log_hint else ''}"
                    )
                backoff = min(self.base_backoff_s * 2 ** len(recent), self.max_backoff_s)
                w.due = now + backoff
                self._say(f"{name} exited with code {code}; restarting in {backoff:.1f}s")
            if now >= w.due:
                w.proc = w.start()
                w.restarts = recent + [now]
                w.due = None
                restarted.append(name)
                self._say(f"{name} restarted (pid {w.proc.pid}, restart {len(w.restarts)} in {self.window_s:.0f}s)")
        return restarted

    def _say(self, text: str) -> None:
        self.out.write(f"  supervisor: {text}\n")
        self.out.flush()

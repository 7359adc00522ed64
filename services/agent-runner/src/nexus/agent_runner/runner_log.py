"""The runner's own log (its stdout and stderr, `runner.log` in the worker's run files) holds at most a budget
of characters. Why: that file lives in memory when the machine has a tmpfs (the worker's
runtimes/run_files.py), and part of what the runner logs comes from the agent — an external CLI's stderr
lines are logged, refusals name what the agent asked — so without a bound a run could fill the machine's
memory through it. Nothing else writes there: every process the runner starts has its output piped."""

import logging
import sys
from typing import IO, Any

DROPPED = "\n[runner.log reached its limit; what the runner says from here on is dropped]\n"


class Bounded:
    """A text stream that passes on at most `budget` characters (shared by the streams that share it), then
    one line saying the rest was dropped, then nothing."""

    def __init__(self, stream: IO[str], budget: list[int]) -> None:
        self.stream = stream
        self.budget = budget

    def write(self, text: str) -> int:
        left = self.budget[0]
        if left < 0 or not text:  # spent and said so (-1), or nothing to pass on
            return len(text)
        if len(text) <= left:
            self.budget[0] = left - len(text)
            self.stream.write(text)
        else:  # also when a write before used the budget up exactly: the notice still comes, once
            self.budget[0] = -1
            self.stream.write(text[:left] + DROPPED)
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, encoding, isatty…: the stream's
        return getattr(self.stream, name)


def bound(limit: int) -> None:
    """From now on this process's stdout, stderr and the log handlers writing to them share `limit`
    characters (at most 4 bytes each)."""
    budget = [limit]
    bounded = {id(stream): Bounded(stream, budget) for stream in (sys.stdout, sys.stderr)}
    sys.stdout, sys.stderr = bounded[id(sys.stdout)], bounded[id(sys.stderr)]
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and id(handler.stream) in bounded:
            handler.setStream(bounded[id(handler.stream)])

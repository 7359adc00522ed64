"""The run state machine. A run is one execution of a task by an agent; it may take several attempts."""

from enum import StrEnum

from nexus.domain.tasks import InvalidTransition


class RunStatus(StrEnum):
    QUEUED = "queued"
    LAUNCHING = "launching"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    LOST = "lost"


RUN_FINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT})
RUN_ACTIVE = frozenset({RunStatus.LAUNCHING, RunStatus.RUNNING, RunStatus.WAITING_APPROVAL})

_ENDINGS = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT, RunStatus.LOST})
_RUN_MOVES: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.LAUNCHING, RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED}),
    RunStatus.LAUNCHING: frozenset({RunStatus.RUNNING, RunStatus.QUEUED}) | _ENDINGS,
    RunStatus.RUNNING: frozenset({RunStatus.WAITING_APPROVAL, RunStatus.QUEUED}) | _ENDINGS,
    RunStatus.WAITING_APPROVAL: frozenset({RunStatus.RUNNING}) | _ENDINGS,
    # A lost run is either retried (queued again) or given up (failed).
    RunStatus.LOST: frozenset({RunStatus.QUEUED, RunStatus.FAILED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
    RunStatus.TIMED_OUT: frozenset(),
}


def can_move_run(current: RunStatus, target: RunStatus) -> bool:
    return target in _RUN_MOVES[current]


def check_run_move(current: RunStatus, target: RunStatus) -> None:
    if not can_move_run(current, target):
        raise InvalidTransition("run", current, target)


def is_final(status: RunStatus) -> bool:
    return status in RUN_FINAL


# What a runner's end by signal most likely means, for the run's reason (exit codes < 0 are -signal).
_SIGNALS = {
    9: "SIGKILL: killed (its memory limit, a deadline, or an operator)",
    24: "SIGXCPU: its CPU time limit was reached",
    25: "SIGXFSZ: its file size limit was reached",
    11: "SIGSEGV: it crashed",
    6: "SIGABRT: it aborted",
    15: "SIGTERM: it was asked to stop",
}


def exit_reason(exit_code: int | None) -> str:
    """Why a runner ended without reporting an end of its own, in words an operator can act on."""
    if exit_code is None:
        return "the runner ended with no exit code"
    if exit_code < 0:
        meaning = _SIGNALS.get(-exit_code, f"signal {-exit_code}")
        return f"the runner was ended by {meaning}"
    if exit_code > 128 and exit_code - 128 in _SIGNALS:  # a shell's way of saying "by signal N"
        return f"the runner was ended by {_SIGNALS[exit_code - 128]}"
    return f"runner exited with code {exit_code} before reporting an end"

"""A run's state as a fold of the facts heard about its attempts, whatever order they arrive in.

Run events reach core-api out of order: a crashed consumer's unacknowledged `launched`/`running`
come back after newer ones, duplicates come back after a redelivery. So a run's state is not moved
event by event; every event is recorded as a fact of its attempt (idempotently), and the status is
derived from all facts:

- within an attempt, the non-final status with the highest stream sequence is the current one;
- the final status with the lowest sequence is that attempt's end (the first verdict said wins);
- an attempt whose runtime ended (exited, lost, launch failed) without a verdict is retried while
  attempts remain; the earliest attempt with a verdict decides the run (its runtime's end, heard
  after the verdict, is not recorded: it changes nothing).

`record` and `derive` are pure; `record(record(a, f), f) == record(a, f)` and the derived state
does not depend on the order facts were recorded in (tests/domain/test_run_facts.py)."""

from dataclasses import dataclass
from typing import Any

from nexus.domain.json_types import JsonObject
from nexus.domain.runs import RUN_FINAL, RunStatus

RUNTIME_ENDS = frozenset({"exited", "lost", "launch_failed"})
_FINAL_VALUES = frozenset(s.value for s in RUN_FINAL)
_PROGRESS = {RunStatus.LAUNCHING.value: 0, RunStatus.RUNNING.value: 1, RunStatus.WAITING_APPROVAL.value: 1}


@dataclass(frozen=True, slots=True)
class StatusFact:
    """The runner (or the worker's deadline) says what an attempt is doing or how it ended."""

    attempt: int
    seq: int
    status: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RuntimeFact:
    """The worker says what became of an attempt's execution: launched, exited, lost, launch_failed."""

    attempt: int
    seq: int
    phase: str
    detail: str = ""
    runtime: str = ""


@dataclass(frozen=True, slots=True)
class RunView:
    status: str
    attempt: int
    reason: str
    verdict: bool  # the status is an attempt's own final word (not a runtime failure, not yet final)


def _find(attempts: list[JsonObject], n: int) -> JsonObject | None:
    return next((a for a in attempts if a.get("n") == n), None)


def new_attempt(n: int, **fields: Any) -> JsonObject:
    return {
        "n": n,
        "status": RunStatus.LAUNCHING.value,
        "seq": -1,
        "reason": "",
        "verdict": None,
        "verdict_seq": None,
        "verdict_reason": "",
        "ended": None,
        "ended_seq": None,
        "runtime": "",
        "ref": "",
        **fields,
    }


def record(attempts: list[JsonObject], fact: StatusFact | RuntimeFact, **new_fields: Any) -> list[JsonObject]:
    """The attempts with `fact` recorded; the same list (identity) when the fact adds nothing."""
    stored = _find(attempts, fact.attempt)
    if stored is not None and "verdict" not in stored and stored.get("status") in _FINAL_VALUES:
        return attempts  # an attempt that ended before attempts kept facts: its end stands
    out = [dict(a) for a in attempts]
    a = _find(out, fact.attempt)
    if a is None:
        a = new_attempt(fact.attempt, **new_fields)
        out.append(a)
        out.sort(key=lambda x: x["n"])
    before = dict(a)
    if isinstance(fact, StatusFact):
        if RunStatus(fact.status) in RUN_FINAL:
            if a.get("verdict_seq") is None or fact.seq < a["verdict_seq"]:
                a.update(verdict=fact.status, verdict_seq=fact.seq, verdict_reason=fact.reason)
        elif fact.status in _PROGRESS and fact.seq > a.get("seq", -1):
            a.update(status=fact.status, seq=fact.seq)
    elif fact.phase == "launched":
        if not a.get("runtime"):
            a.update(runtime=fact.runtime, ref=fact.detail)
    elif fact.phase in RUNTIME_ENDS:
        # An attempt that gave its verdict is decided: how its process ended after that adds nothing
        # (`derive` reads the verdict first), so recording it would be a write that changes no state.
        if a.get("verdict") is None and (a.get("ended_seq") is None or fact.seq < a["ended_seq"]):
            a.update(ended=f"{fact.phase}: {fact.detail}" if fact.detail else fact.phase, ended_seq=fact.seq)
    return attempts if a == before and len(out) == len(attempts) else out


def derive(attempts: list[JsonObject], max_attempts: int) -> RunView:
    """The run's status, current attempt and reason from its attempts' facts."""
    n, reason = 1, ""
    while True:
        a = _find(attempts, n)
        if a is None:
            return RunView(RunStatus.QUEUED.value, n, reason, False)
        if "verdict" not in a and a.get("status") in _FINAL_VALUES:  # stored before attempts kept facts
            if _find(attempts, n + 1) is None:
                return RunView(str(a["status"]), n, str(a.get("reason", "")), True)
            reason, n = str(a.get("reason", "")), n + 1
            continue
        if a.get("verdict"):
            return RunView(a["verdict"], n, a.get("verdict_reason", ""), True)
        if a.get("ended"):
            reason = str(a["ended"])
            if n >= max_attempts:
                return RunView(RunStatus.FAILED.value, n, f"{reason} (after {n} attempts)", False)
            n += 1
            continue
        return RunView(a.get("status") or RunStatus.LAUNCHING.value, n, "", False)


def attempt_status(a: JsonObject) -> str:
    """What one attempt came to, for the run's attempt list."""
    if a.get("verdict"):
        return str(a["verdict"])
    if a.get("ended"):
        return RunStatus.FAILED.value
    return str(a.get("status") or RunStatus.LAUNCHING.value)

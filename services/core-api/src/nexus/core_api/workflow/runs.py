"""How run events move a run: attempts, retries, final states; what each move asks to happen next.

Events are recorded as facts of their attempt, ordered by their stream sequence, and the run's state
is derived from all of them (nexus.domain.run_facts), so it converges whatever order they arrive in.
Every step is a compare-and-set on the run's version, so a redelivered event changes nothing twice.
A step returns the run as it stored it and its follow-ups (announce it, move its task, launch a retry,
notify its parent, let its goal follow); `engine` carries them out."""

import logging
from datetime import UTC
from typing import Any

import msgspec

from nexus.core_api.context import Context
from nexus.core_api.metrics import DISPATCH_LATENCY, RUN_DURATION, RUNS_TOTAL
from nexus.core_api.workflow.followups import Followup, Launch, NotifyParent, Publish, RunEnded, TaskFollowsRun
from nexus.db.connection import update_versioned
from nexus.db.documents import Run, now
from nexus.domain.ids import derived_ulid, new_ulid
from nexus.domain.json_types import JsonObject
from nexus.domain.limits import storable
from nexus.domain.run_facts import RuntimeFact, StatusFact, derive, record
from nexus.domain.runs import RUN_FINAL, RunStatus, exit_reason
from nexus.domain.tasks import TaskStatus
from nexus.events.catalog import RUNS_STREAM
from nexus.events.envelope import decode_raw
from nexus.events.payloads import CancelRun, RunChanged, RunStatusChanged, RuntimeChanged

log = logging.getLogger("nexus.core_api.runs")
RUNS_ENDED = RUNS_TOTAL


def _observe_end(run: Run) -> None:
    RUNS_ENDED.labels(run.status).inc()
    if run.ended_at and run.created_at:
        RUN_DURATION.labels(run.status).observe(max(0.0, (run.ended_at - run.created_at).total_seconds()))


TASK_AFTER_RUN = {
    RunStatus.SUCCEEDED: TaskStatus.DONE,
    RunStatus.FAILED: TaskStatus.FAILED,
    RunStatus.TIMED_OUT: TaskStatus.FAILED,
    RunStatus.CANCELLED: TaskStatus.CANCELLED,
}


def _announce(run: Run, type_: str) -> Publish:
    """A run's move, announced under an id named by the move (its run, status and attempt): announced
    again after a crash, it is taken once by JetStream (within its duplicate window) and by consumers."""
    return Publish(
        type_,
        RunChanged(
            run_id=run.id,
            task_id=run.task_id,
            agent_id=run.agent_id,
            status=run.status,
            attempt=run.attempt,
            reason=run.reason,
        ),
        {"correlation_id": run.id, "msg_id": derived_ulid(run.id, type_, str(run.attempt))},
    )


def _derived_fields(
    r: Run, attempts: list[JsonObject], extra: JsonObject, fact: StatusFact | RuntimeFact | None = None
) -> JsonObject:
    """The run's fields after its attempts' facts changed: status, attempt and reason are derived."""
    view = derive(attempts, r.max_attempts)
    stamp = now()
    for a in attempts:
        a.setdefault("started_at", stamp)
        if a.get("verdict") or a.get("ended"):
            a["ended_at"] = a.get("ended_at") or stamp
        a["reason"] = a.get("verdict_reason") or a.get("ended") or ""
    fields: JsonObject = {"attempts": attempts, "status": view.status, "attempt": view.attempt, "reason": view.reason}
    final = RunStatus(view.status) in RUN_FINAL
    if final:
        fields["ended_at"] = r.ended_at if RunStatus(r.status) in RUN_FINAL and r.ended_at else stamp
        fields["final_by"] = "verdict" if view.verdict else "retries"
        deciding = next((a for a in attempts if a["n"] == view.attempt), {})
        if (
            view.verdict
            and fact is not None
            and (fact.attempt, fact.seq) == (view.attempt, deciding.get("verdict_seq"))
        ):
            fields.update(extra)  # the summary, branch and commit of the verdict that decided the run
    if view.status == RunStatus.RUNNING.value and r.started_at is None:
        fields["started_at"] = stamp
    if view.attempt != r.attempt and view.status == RunStatus.QUEUED.value:
        fields["launch_msg_id"] = new_ulid()  # a new attempt is a new launch command
    return fields


Moved = tuple[Run | None, list[Followup]]


async def apply_facts(
    run_id: str, facts: list[tuple[StatusFact | RuntimeFact, JsonObject]], *, again: bool = False
) -> Moved:
    """Record facts of the run's attempts, in stream order, as ONE compare-and-set, and let the run
    follow what all its facts say. A run ended by its own verdict does not change again, except by an
    earlier attempt's verdict that arrived late (which is what really happened first); a run given up
    after failed attempts yields to any verdict; a run ended by an operator ignores them all.
    Each fact is recorded on the run as the facts before it left it, exactly as one write each would
    have, and every transition's follow-ups are returned in order, each with the run as that
    transition left it (a run that went queued → running → succeeded in one fetch is still announced
    started, then succeeded). `again` (facts handed out before and never acknowledged): a verdict among
    them that is stored already has the run's end carried out once more (`end_followups`)."""
    steps: list[tuple[str, int, Run]] = []  # (status before, attempt before, the run after) per transition
    ended_again = False  # a verdict already recorded came again: the run's end may not have been carried out

    def mutate(r: Run) -> JsonObject | None:
        nonlocal ended_again
        steps.clear()  # a retried compare-and-set starts again from the stored run
        ended_again = False
        cur = r
        fields: JsonObject = {}
        for fact, extra in facts:
            if RunStatus(cur.status) in RUN_FINAL and cur.final_by not in ("verdict", "retries"):
                break  # ended by an operator (cancel): nothing a runner says changes that
            attempts = record(cur.attempts, fact)
            if attempts is cur.attempts:
                # A duplicate: already recorded. A verdict comes again only when the process that stored
                # it did not live to take it off the stream — maybe before it carried out the run's end.
                ended_again |= again and isinstance(fact, StatusFact) and RunStatus(fact.status) in RUN_FINAL
                continue
            changed = _derived_fields(cur, attempts, extra, fact)
            after = cur.model_copy(update=changed)
            steps.append((cur.status, cur.attempt, after))
            cur = after
            fields.update(changed)
        return fields or None

    run = await update_versioned(Run, run_id, mutate)
    then = [f for was, was_attempt, after in steps for f in _followups(after, was, was_attempt)] if run else []
    if ended_again and not any(RunStatus(after.status) in RUN_FINAL for _, _, after in steps):
        # Whatever else these facts changed, the run's end is carried out again (each step may be taken twice).
        run = run or await Run.get(run_id)
        if run is not None and RunStatus(run.status) in RUN_FINAL:
            then += end_followups(run, again=True)
    return run, then


def _followups(run: Run, was: str, was_attempt: int) -> list[Followup]:
    """What a change of derived state asks for: announce it, move the task, launch a retry."""
    status = RunStatus(run.status)
    if status == RunStatus(was) and run.attempt == was_attempt:
        return []
    if (
        status == RunStatus.RUNNING
        and RunStatus(was) in (RunStatus.QUEUED, RunStatus.LAUNCHING)
        and run.attempt == 1
        and run.created_at
    ):
        # The database's are UTC.
        created = run.created_at if run.created_at.tzinfo else run.created_at.replace(tzinfo=UTC)
        DISPATCH_LATENCY.observe(max(0.0, (now() - created).total_seconds()))  # until the runner's first event
    if status in RUN_FINAL:
        _observe_end(run)
        log.info("run %s %s (attempt %d): %s", run.id, status.value, run.attempt, run.reason or "-")
        return end_followups(run)
    if status == RunStatus.QUEUED and run.attempt != was_attempt:
        RUNS_ENDED.labels("retried").inc()
        log.info("run %s attempt %d failed (%s); launching attempt %d", run.id, was_attempt, run.reason, run.attempt)
        return [Launch(run)]
    if status == RunStatus.RUNNING and run.attempt == 1 and RunStatus(was) in (RunStatus.QUEUED, RunStatus.LAUNCHING):
        return [_announce(run, "run.started")]
    return []


def end_followups(run: Run, *, again: bool = False) -> list[Followup]:
    """What a run's end asks for: its task follows, the end is announced, a later attempt or a runner
    told to stop, its parent told, its goal let follow. `again`: carried out once more for an end stored
    by a process that may have died half-way through carrying it out — each step is one that may be
    taken twice (compare-and-sets that find the work done, announcements under the ids of their first)."""
    status = RunStatus(run.status)
    then: list[Followup] = [
        TaskFollowsRun(
            run.task_id,
            TASK_AFTER_RUN[status],
            run.id,
            {
                "id": run.id,
                "status": run.status,
                "attempt": run.attempt,
                "cost_usd": float((run.usage or {}).get("cost_usd", 0.0)),
            },
            again=again,
        ),
        _announce(run, f"run.{status.value}"),
    ]
    if run.final_by == "operator":  # its runner was told to stop (`cancel`): told again
        if again:
            then.append(_stop(run.id, run.reason or "cancelled"))
    elif any(a.get("n", 0) > run.attempt and not a.get("verdict") and not a.get("ended") for a in run.attempts):
        # A late verdict of an earlier attempt decided the run: the later attempt has nothing to do.
        then.append(_stop(run.id, "an earlier attempt already ended the run"))
    if run.parent_run_id:
        then.append(NotifyParent(run))
    then.append(RunEnded(run))
    return then


def _stop(run_id: str, reason: str) -> Publish:
    return Publish("worker.cancel_run", CancelRun(run_id=run_id, reason=reason), {"correlation_id": run_id})


async def verdict_in_stream(ctx: Context, run_id: str, attempt: int) -> tuple[RunStatusChanged, int] | None:
    """The runner's last status on the stream, if it is a verdict of `attempt`: JetStream stored it
    before the runner exited, even when this consumer has not been handed it yet."""
    try:
        msg = await ctx.js.get_last_msg(RUNS_STREAM, f"nexus.run.{run_id}.status")
        ev = msgspec.json.decode(decode_raw(msg.data or b"").data, type=RunStatusChanged)
    except Exception:  # noqa: BLE001 — none there, or unreadable: the exit decides
        return None
    if ev.attempt != attempt or RunStatus(ev.status) not in RUN_FINAL:
        return None
    return ev, msg.seq or 0


def runtime_fact(ev: RuntimeChanged, seq: int) -> RuntimeFact:
    detail = ev.detail
    if ev.phase == "exited":
        detail = exit_reason(ev.exit_code)
    return RuntimeFact(ev.attempt, seq, ev.phase, storable(detail), runtime=storable(ev.runtime))


def status_fact(ev: RunStatusChanged, seq: int) -> tuple[StatusFact, JsonObject]:
    """The fact and what the run keeps of it when it is the verdict that decides the run."""
    extra: dict[str, Any] = {
        k: storable(v)
        for k, v in {
            "summary": ev.summary,
            "branch": ev.branch,
            "commit_sha": ev.commit_sha,
            "ledger_hash": ev.ledger_hash,
        }.items()
        if v
    }
    if ev.usage is not None:
        extra["usage"] = {
            "input_tokens": ev.usage.input_tokens,
            "output_tokens": ev.usage.output_tokens,
            "cost_usd": ev.usage.cost_usd,
        }
    return StatusFact(ev.attempt, seq, ev.status, storable(ev.reason)), extra


async def finish(run_id: str, status: RunStatus, reason: str) -> Moved:
    """An operator ends a run (cancel): final at once, and nothing a runner says later changes it."""
    before: JsonObject = {}

    def mutate(r: Run) -> JsonObject | None:
        if RunStatus(r.status) in RUN_FINAL:
            return None
        attempts = record(r.attempts, StatusFact(r.attempt, 0, status.value, reason))
        before.update(status=r.status, attempt=r.attempt)
        return {**_derived_fields(r, attempts, {}), "status": status.value, "reason": reason, "final_by": "operator"}

    run = await update_versioned(Run, run_id, mutate)
    if run is None:
        return None, []
    return run, _followups(run, before["status"], before["attempt"])


async def cancel(run_id: str, reason: str) -> Moved:
    run, then = await finish(run_id, RunStatus.CANCELLED, reason)
    if run is not None:
        then.append(_stop(run_id, reason))
    return run, then

"""How run events move a run (and its task): attempts, retries, final states, domain events.

Every step is a compare-and-set on the run's version, so a redelivered event changes nothing twice."""

import logging

from prometheus_client import Histogram

from nexus.observability.metrics import RUNS_TOTAL

from nexus.core_api.context import Context
from nexus.core_api.runs.dispatch import command_launch
from nexus.core_api.tasks.service import set_status_from_run
from nexus.db.connection import update_versioned
from nexus.db.documents import Run, now
from nexus.domain.ids import new_ulid
from nexus.domain.runs import RUN_FINAL, RunStatus, can_move_run
from nexus.domain.tasks import TaskStatus
from nexus.events.payloads import RunChanged, RunStatusChanged, RuntimeChanged

log = logging.getLogger("nexus.core_api.runs")
RUNS_ENDED = RUNS_TOTAL
RUN_DURATION = Histogram(
    "nexus_run_duration_seconds", "From run creation to its final state", ["status"],
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)


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


def _attempt(run: Run, n: int) -> dict | None:
    return next((a for a in run.attempts if a.get("n") == n), None)


def _with_attempt(run: Run, n: int, **fields) -> list[dict]:
    attempts = [dict(a) for a in run.attempts]
    for a in attempts:
        if a.get("n") == n:
            a.update({k: v for k, v in fields.items() if v is not None})
            return attempts
    attempts.append({"n": n, "status": "launching", "reason": "", "started_at": now(), "ended_at": None, **fields})
    return attempts


async def _announce(ctx: Context, run: Run, type_: str) -> None:
    await ctx.publisher.publish(
        type_,
        RunChanged(run_id=run.id, task_id=run.task_id, agent_id=run.agent_id, status=run.status, attempt=run.attempt, reason=run.reason),
        correlation_id=run.id,
    )


async def finish(ctx: Context, run_id: str, status: RunStatus, reason: str, **fields) -> Run | None:
    """Move a run to a final state once; the task follows; the fact is announced."""

    def mutate(r: Run):
        if RunStatus(r.status) in RUN_FINAL or not can_move_run(RunStatus(r.status), status):
            return None
        return {
            "status": status.value, "reason": reason, "ended_at": now(),
            "attempts": _with_attempt(r, r.attempt, status=status.value, reason=reason, ended_at=now()),
            **fields,
        }

    run = await update_versioned(Run, run_id, mutate)
    if run is None:
        return None
    _observe_end(run)
    await set_status_from_run(ctx, run.task_id, TASK_AFTER_RUN[status], run.id)
    await _announce(ctx, run, f"run.{status.value}")
    log.info("run %s %s: %s", run.id, status.value, reason or "-")
    from nexus.core_api.goals.service import on_run_finished
    from nexus.core_api.sessions.meta import on_child_finished

    await on_child_finished(ctx, run)
    await on_run_finished(ctx, run)
    return run


async def retry_or_fail(ctx: Context, run_id: str, attempt: int, reason: str) -> Run | None:
    """An attempt died for reasons outside the agent (launch failure, lost, crash): try again while
    attempts remain, else the run fails with the last reason."""

    def mutate(r: Run):
        if r.attempt != attempt or RunStatus(r.status) in RUN_FINAL:
            return None
        attempts = _with_attempt(r, attempt, status="failed", reason=reason, ended_at=now())
        if r.attempt >= r.max_attempts:
            return {"status": RunStatus.FAILED.value, "reason": f"{reason} (after {r.attempt} attempts)", "ended_at": now(), "attempts": attempts}
        return {"status": RunStatus.QUEUED.value, "attempt": r.attempt + 1, "attempts": attempts, "launch_msg_id": new_ulid(), "reason": reason}

    run = await update_versioned(Run, run_id, mutate)
    if run is None:
        return None
    if run.status == RunStatus.FAILED.value:
        _observe_end(run)
        await set_status_from_run(ctx, run.task_id, TaskStatus.FAILED, run.id)
        await _announce(ctx, run, "run.failed")
        from nexus.core_api.goals.service import on_run_finished

        await on_run_finished(ctx, run)
    else:
        RUNS_ENDED.labels("retried").inc()
        log.info("run %s attempt %d failed (%s); launching attempt %d", run.id, attempt, reason, run.attempt)
        await command_launch(ctx, run)
    return run


async def on_runtime(ctx: Context, run_id: str, ev: RuntimeChanged) -> None:
    if ev.phase == "launched":

        def mutate(r: Run):
            if r.attempt != ev.attempt or RunStatus(r.status) in RUN_FINAL:
                return None
            a = _attempt(r, ev.attempt)
            if a is not None and a.get("runtime"):
                return None
            fields = {"attempts": _with_attempt(r, ev.attempt, runtime=ev.runtime, ref=ev.detail)}
            if r.status == RunStatus.QUEUED.value:
                fields["status"] = RunStatus.LAUNCHING.value
            return fields

        await update_versioned(Run, run_id, mutate)
    elif ev.phase == "launch_failed":
        await retry_or_fail(ctx, run_id, ev.attempt, f"launch failed: {ev.detail}")
    elif ev.phase == "lost":
        await retry_or_fail(ctx, run_id, ev.attempt, f"lost: {ev.detail}")
    elif ev.phase == "exited":
        run = await Run.get(run_id)
        if run is not None and run.attempt == ev.attempt and RunStatus(run.status) not in RUN_FINAL:
            await retry_or_fail(ctx, run_id, ev.attempt, f"runner exited with code {ev.exit_code} before reporting an end")


async def on_status(ctx: Context, run_id: str, ev: RunStatusChanged) -> None:
    target = RunStatus(ev.status)
    extra = {
        k: v for k, v in {"summary": ev.summary, "branch": ev.branch, "commit_sha": ev.commit_sha, "ledger_hash": ev.ledger_hash}.items() if v
    }
    if ev.usage is not None:
        extra["usage"] = {"input_tokens": ev.usage.input_tokens, "output_tokens": ev.usage.output_tokens, "cost_usd": ev.usage.cost_usd}
    if target in RUN_FINAL:
        run = await Run.get(run_id)
        if run is not None and run.attempt == ev.attempt:
            await finish(ctx, run_id, target, ev.reason, **extra)
        return

    def mutate(r: Run):
        if r.attempt != ev.attempt or r.status == target.value or not can_move_run(RunStatus(r.status), target):
            return None
        fields = {"status": target.value, **extra}
        if target == RunStatus.RUNNING:
            fields["started_at"] = r.started_at or now()
            fields["attempts"] = _with_attempt(r, ev.attempt, status="running")
        return fields

    run = await update_versioned(Run, run_id, mutate)
    if run is not None and target == RunStatus.RUNNING and run.attempts and len(run.attempts) == 1:
        await _announce(ctx, run, "run.started")


async def cancel(ctx: Context, run_id: str, reason: str) -> Run | None:
    from nexus.events.payloads import CancelRun

    run = await finish(ctx, run_id, RunStatus.CANCELLED, reason)
    if run is not None:
        await ctx.publisher.publish("worker.cancel_run", CancelRun(run_id=run_id, reason=reason), correlation_id=run_id)
    return run

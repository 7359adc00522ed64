"""Approvals: a paused run waits for a lead; the decision is relayed to the run; the clock can expire it."""

import logging
from datetime import UTC, datetime, timedelta
from typing import Literal, cast

from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError, not_found
from nexus.core_api.metrics import APPROVAL_DECISION, APPROVALS_PENDING, RUN_EVENTS_DROPPED
from nexus.core_api.schemas import iso
from nexus.db.documents import Approval, Run, now
from nexus.db.writes import update_document
from nexus.domain.runs import RUN_FINAL, RunStatus
from nexus.events.payloads import ApprovalDecided, ApprovalRequested

log = logging.getLogger("nexus.core_api.approvals")

Decision = Literal["approved", "rejected", "expired"]


async def on_requested(ctx: Context, ev: ApprovalRequested) -> None:
    if not await _room_for_approval(ctx, ev):
        return
    expires = (
        datetime.fromisoformat(ev.expires_at.replace("Z", "+00:00"))
        if ev.expires_at
        else now() + timedelta(seconds=ctx.settings.approval_ttl_s)
    )
    await update_document(
        Approval,
        ev.approval_id,
        {
            "$setOnInsert": {
                "run_id": ev.run_id,
                "session_id": ev.session_id,
                "action": ev.action,
                "detail": ev.detail,
                "status": "pending",
                "reason": "",
                "decided_by": "",
                "expires_at": expires,
                "created_at": now(),
                "decided_at": None,
            }
        },
        upsert=True,
    )
    # Announced once the run's `waiting_approval` is stored (`announce_requested`): the runner reports it
    # right after this request, on the same ordered stream, possibly in a later fetch.


async def _room_for_approval(ctx: Context, ev: ApprovalRequested) -> bool:
    """One more approval of the run may be stored (and so announced to every approver). Approval requests pass
    the run's events cap (they move the run), so anything holding the run's credential could flood the approvers
    and the database with them: past `run_approvals_max` they are dropped and counted. One stored already (a
    redelivery) is let through; the count is a read per request, and requests are rare."""
    cap = ctx.settings.run_approvals_max
    if await Approval.find({"run_id": ev.run_id}).count() < cap or await Approval.get(ev.approval_id) is not None:
        return True
    RUN_EVENTS_DROPPED.inc()
    log.warning("run %s: past %d approval requests; approval %s dropped", ev.run_id, cap, ev.approval_id)
    return False


async def announce_requested(ctx: Context, run_id: str) -> None:
    """Publish approval.requested for the run's pending approvals, once its `waiting_approval` is
    stored: whoever the nudge wakes finds the run waiting. The message id is the approval's, so a
    second announcement (a redelivered status) is dropped by JetStream's dedupe."""
    async for doc in Approval.find({"run_id": run_id, "status": "pending"}):
        ev = ApprovalRequested(
            approval_id=doc.id,
            run_id=doc.run_id,
            action=doc.action,
            detail=doc.detail,
            session_id=doc.session_id,
            expires_at=iso(doc.expires_at) or "",
        )
        await ctx.publisher.publish("approval.requested", ev, correlation_id=run_id, msg_id=f"{doc.id}.requested")


async def decide(
    ctx: Context, approval_id: str, decision: Decision, reason: str, decided_by: str
) -> tuple[Approval, bool]:
    """The approval decided (stored at once); True when the run was told, False when the bus was away: it
    is told once the bus is back."""
    doc = await Approval.get(approval_id)
    if doc is None:
        raise not_found("approval", approval_id)
    if doc.status != "pending":
        raise DomainError(409, f"approval is already {doc.status}", field="decision")
    if doc.expires_at and doc.expires_at < datetime.now(UTC):
        decision, reason = "expired", "the approval expired before a decision"
    elif ended := await _ended({doc.run_id}):  # nothing waits for a word: saying "approved" would mislead
        decision, reason = "expired", f"its run ended ({ended[doc.run_id]}) before a decision"
    res = await update_document(
        Approval,
        approval_id,
        {"$set": {"status": decision, "reason": reason, "decided_by": decided_by, "decided_at": now()}},
        {"status": "pending"},
    )
    if res.modified_count != 1:
        raise DomainError(409, "approval was decided concurrently", field="decision")
    if doc.created_at:  # this call decided it (compare-and-set above): observed once
        created = doc.created_at if doc.created_at.tzinfo else doc.created_at.replace(tzinfo=UTC)
        APPROVAL_DECISION.labels(decision).observe(max(0.0, (datetime.now(UTC) - created).total_seconds()))
    decided = await Approval.get(approval_id)
    if decided is None:
        raise not_found("approval", approval_id)
    return decided, await _tell(ctx, decided)


async def _tell(ctx: Context, doc: Approval) -> bool:
    """The stored decision told to its run and to the chat, under ids named by the approval (told again,
    it is taken once); False when the bus was away: told once it is back."""
    decision = cast(Decision, doc.status)  # decided: one of the three
    ev = ApprovalDecided(
        approval_id=doc.id, run_id=doc.run_id, decision=decision, reason=doc.reason, decided_by=doc.decided_by
    )
    told = await ctx.publisher.publish_soon("run.approval_decided", ev, run_id=doc.run_id, msg_id=f"{doc.id}.told")
    return (
        await ctx.publisher.publish_soon("approval.decided", ev, correlation_id=doc.run_id, msg_id=f"{doc.id}.decided")
        and told
    )


async def tell_decided(ctx: Context) -> int:
    """A decision stored by a core-api that died before telling the run (its run still waits, not moved
    since the decision, past the requeue delay) is told again; the run would otherwise wait out the
    approval's time and end as if nobody had decided. Told each sweep until the run moves or the approval's
    time is out (JetStream drops the copies within its duplicate window; the runner takes one)."""
    cutoff = now() - timedelta(seconds=ctx.settings.requeue_after_s)
    n = 0
    async for run in Run.find({"status": RunStatus.WAITING_APPROVAL.value, "updated_at": {"$lt": cutoff}}):
        async for doc in Approval.find(
            {
                "run_id": run.id,
                "status": {"$ne": "pending"},
                "decided_at": {"$gt": run.updated_at, "$lt": cutoff},
                "expires_at": {"$gt": now()},  # past it, the runner no longer waits for a word
            }
        ):
            log.warning("approval %s was %s and its run still waits: told again", doc.id, doc.status)
            await _tell(ctx, doc)
            n += 1
    return n


async def count_pending(ctx: Context) -> None:
    APPROVALS_PENDING.set(await Approval.find({"status": "pending"}).count())


async def _ended(run_ids: set[str]) -> dict[str, str]:
    """Which of these runs have ended, and how: a run between attempts (queued, launching again) has not,
    nor one given up after an attempt was judged lost — that runner may live on (a partition, a frozen host)
    and its verdict still decides the run (`apply_facts`), so its approval waits for a lead or its time."""
    final = [status.value for status in RUN_FINAL]
    return {
        run.id: run.status
        async for run in Run.find({"_id": {"$in": list(run_ids)}, "status": {"$in": final}})
        if not _runner_may_live(run)
    }


def _runner_may_live(run: Run) -> bool:
    return run.final_by == "retries" and any(str(a.get("ended") or "").startswith("lost") for a in run.attempts)


async def expire_due(ctx: Context) -> int:
    """Close what nobody can decide any more: an approval past its time, or one whose run ended without it
    (cancelled, timed out, failed) — that one stayed pending in the list, the count and the chat for good."""
    pending = [doc async for doc in Approval.find({"status": "pending"})]
    ended = await _ended({doc.run_id for doc in pending}) if pending else {}
    n = 0
    for doc in pending:
        if doc.run_id not in ended and not (doc.expires_at and doc.expires_at < datetime.now(UTC)):
            continue
        try:
            await decide(ctx, doc.id, "expired", "expired", "system")
            n += 1
        except DomainError:
            pass
    return n

"""Approvals: a paused run waits for a lead; the decision is relayed to the run; the clock can expire it."""

from datetime import UTC, datetime, timedelta
from typing import Literal

from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError, not_found
from nexus.core_api.metrics import APPROVAL_DECISION, APPROVALS_PENDING
from nexus.core_api.schemas import iso
from nexus.db.documents import Approval, now
from nexus.db.writes import update_document
from nexus.events.payloads import ApprovalDecided, ApprovalRequested

Decision = Literal["approved", "rejected", "expired"]


async def on_requested(ctx: Context, ev: ApprovalRequested) -> None:
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
    ev = ApprovalDecided(
        approval_id=approval_id, run_id=doc.run_id, decision=decision, reason=reason, decided_by=decided_by
    )
    # The decision is stored: it reaches the run (and the chat) once the bus is back if it is away now.
    told = await ctx.publisher.publish_soon("run.approval_decided", ev, run_id=doc.run_id)
    told = await ctx.publisher.publish_soon("approval.decided", ev, correlation_id=doc.run_id) and told
    decided = await Approval.get(approval_id)
    if decided is None:
        raise not_found("approval", approval_id)
    return decided, told


async def count_pending(ctx: Context) -> None:
    APPROVALS_PENDING.set(await Approval.find({"status": "pending"}).count())


async def expire_due(ctx: Context) -> int:
    n = 0
    async for doc in Approval.find({"status": "pending", "expires_at": {"$lt": now()}}):
        try:
            await decide(ctx, doc.id, "expired", "expired", "system")
            n += 1
        except DomainError:
            pass
    return n

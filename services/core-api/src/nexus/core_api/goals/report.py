"""The goal report: when a goal ends, what each child did (summary, branch, commit, ledger hash),
what each cost, how long it all took and which approvals were decided; stored once, emitted once."""

import msgspec

from nexus.core_api.budgets import spend
from nexus.core_api.context import Context
from nexus.core_api.schemas import iso
from nexus.db.documents import Approval, Goal, Run, Task
from nexus.db.writes import update_document
from nexus.domain.budgets import Spend
from nexus.events.payloads import ApprovalReport, ChildReport, GoalReport


def child_report(task: Task, run: Run | None, cost: Spend) -> ChildReport:
    return ChildReport(
        task_id=task.id,
        title=task.title,
        status=task.status,
        run_id=run.id if run else "",
        session_id=run.session_id if run else "",
        agent_id=task.assignee_agent_id or "",
        summary=(run.summary if run else "")[:4000],
        reason=run.reason if run else "",
        branch=run.branch if run else "",
        commit_sha=run.commit_sha if run else "",
        ledger_hash=run.ledger_hash if run else "",
        cost_usd=round(cost.usd, 6),
        tokens=cost.tokens,
    )


async def build(goal: Goal) -> GoalReport:
    tasks = await Task.find({"goal_id": goal.id}).sort("+created_at").to_list()
    runs = await Run.find({"goal_id": goal.id}).to_list()
    per_run = await spend.by_run([r.id for r in runs])
    by_id = {r.id: r for r in runs}

    def task_cost(t: Task) -> Spend:
        return spend.total({r.id: per_run.get(r.id, Spend()) for r in runs if r.task_id == t.id})

    reports = [child_report(t, by_id.get(t.current_run_id or ""), task_cost(t)) for t in tasks]
    meta = next((rep for t, rep in zip(tasks, reports, strict=True) if t.is_meta), None)
    children = [rep for t, rep in zip(tasks, reports, strict=True) if not t.is_meta]
    approvals = await Approval.find(
        {"run_id": {"$in": list(by_id)}, "status": {"$in": ["approved", "rejected", "expired"]}}
    ).to_list()
    total = spend.total(per_run)
    ended = goal.ended_at or goal.updated_at
    return GoalReport(
        goal_id=goal.id,
        title=goal.title,
        status=goal.status,
        reason=goal.status_reason,
        meta=meta,
        children=children,
        approvals=[
            ApprovalReport(approval_id=a.id, run_id=a.run_id, action=a.action, status=a.status, decided_by=a.decided_by)
            for a in approvals
        ],
        cost_usd=round(total.usd, 6),
        tokens=total.tokens,
        started_at=iso(goal.created_at) or "",
        ended_at=iso(ended) or "",
        duration_s=round(max(0.0, (ended - goal.created_at).total_seconds()), 3),
    )


async def finish(ctx: Context, goal_id: str) -> None:
    """Store the report of an ended goal, once (the write only matches a goal without one), then emit it."""
    goal = await Goal.get(goal_id)
    if goal is None or goal.report is not None or goal.status not in ("done", "failed", "cancelled"):
        return
    report = await build(goal)
    res = await update_document(Goal, goal.id, {"$set": {"report": msgspec.to_builtins(report)}}, {"report": None})
    if res.modified_count == 1:
        await ctx.publisher.publish("goal.reported", report, correlation_id=goal.id)

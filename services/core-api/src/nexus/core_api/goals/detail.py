"""The goal as `GET /v1/goals/{id}` shows it (docs/goals.md): read from its tasks, runs and their model calls."""

from nexus.core_api.budgets import spend
from nexus.core_api.budgets.routes import budget_out
from nexus.core_api.budgets.service import cap_of
from nexus.core_api.goals.schemas import GoalChild, GoalDetail, GoalOut, MetaSession, Progress, Usage
from nexus.core_api.goals.service import to_out
from nexus.core_api.schemas import iso
from nexus.db.documents import Goal, Run, Task
from nexus.domain.budgets import Spend


async def detail(goal: Goal) -> GoalDetail:
    """Everything `GET /v1/goals/{id}` shows, read from the goal's tasks, runs and their model calls."""
    tasks = await Task.find({"goal_id": goal.id}).sort("+created_at").to_list()
    runs = await Run.find({"goal_id": goal.id}).to_list()
    per_run = await spend.by_run([r.id for r in runs])
    by_id = {r.id: r for r in runs}
    total = spend.total(per_run)

    def cost(t: Task) -> Spend:
        return spend.total({r.id: per_run.get(r.id, Spend()) for r in runs if r.task_id == t.id})

    meta: MetaSession | None = None
    children: list[GoalChild] = []
    counts: dict[str, int] = {}
    for t in tasks:
        run = by_id.get(t.current_run_id or "")
        c = cost(t)
        if t.is_meta:
            meta = MetaSession(
                task_id=t.id,
                task_status=t.status,
                run_id=run.id if run else None,
                run_status=run.status if run else None,
                session_id=run.session_id if run else t.session_id,
                agent_id=t.assignee_agent_id,
                cost_usd=round(c.usd, 6),
                tokens=c.tokens,
            )
            continue
        counts[t.status] = counts.get(t.status, 0) + 1
        children.append(
            GoalChild(
                task_id=t.id,
                title=t.title,
                status=t.status,
                blocked=t.blocked,
                agent_id=t.assignee_agent_id,
                run_id=run.id if run else None,
                run_status=run.status if run else None,
                session_id=run.session_id if run else t.session_id,
                reason=run.reason if run else "",
                branch=run.branch if run else "",
                commit_sha=run.commit_sha if run else "",
                budget=t.budget,
                weight=t.budget_weight,
                cost_usd=round(c.usd, 6),
                tokens=c.tokens,
            )
        )
    budget = None
    if goal.budget:
        cap = cap_of(goal.budget)
        spend.observe("goal", goal.id, cap, total)
        budget = budget_out(cap, total)
    base = to_out(goal)
    return GoalDetail(
        **{f: getattr(base, f) for f in GoalOut.__struct_fields__},
        status_reason=goal.status_reason,
        ended_at=iso(goal.ended_at),
        progress=Progress(total=len(children), by_status=counts),
        usage=Usage(cost_usd=round(total.usd, 6), tokens=total.tokens),
        budget=budget,
        meta=meta,
        children=children,
        report=goal.report,
    )

"""Goals: a lead's intent. A goal with a meta agent starts a meta session that plans child tasks."""

import msgspec

from nexus.core_api.context import Context
from nexus.core_api.errors import not_found
from nexus.core_api.goals.schemas import GoalOut
from nexus.core_api.named import named_id
from nexus.core_api.schemas import iso
from nexus.db.cache import cached_get
from nexus.db.documents import Agent, Goal, Repository, Task
from nexus.db.writes import update_document
from nexus.domain.budgets import Cap
from nexus.domain.ids import new_id
from nexus.events.payloads import GoalChanged


def to_out(g: Goal) -> GoalOut:
    return GoalOut(
        id=g.id, title=g.title, description=g.description, status=g.status, meta_agent_id=g.meta_agent_id,
        repository_id=g.repository_id, meta_run_id=g.meta_run_id, created_by=g.created_by,
        created_at=iso(g.created_at), updated_at=iso(g.updated_at),
    )


async def get(goal_id: str) -> Goal:
    doc = await cached_get(Goal, goal_id)
    if doc is None:
        raise not_found("goal", goal_id)
    return doc


async def resolve_refs(meta_agent: str | None, repository: str | None) -> tuple[str | None, str | None]:
    """Names or ids in, ids out; a reference to nothing is the caller's mistake, named by field."""
    agent_id = repo_id = None
    if meta_agent:
        agent_id = await named_id(Agent, meta_agent, kind="agent", field="meta_agent")
    if repository:
        repo_id = await named_id(Repository, repository, kind="repository", field="repository")
    return agent_id, repo_id


async def create_goal(ctx: Context, title: str, description: str, *, created_by: str, meta_agent_id: str | None = None,
                      repository_id: str | None = None, goal_id: str | None = None, budget: Cap | None = None) -> Goal:
    goal = Goal(id=goal_id or new_id("goal"), title=title, description=description, created_by=created_by,
                meta_agent_id=meta_agent_id, repository_id=repository_id,
                budget=msgspec.to_builtins(budget) if budget is not None and not budget.empty else {})
    await goal.insert()
    await ctx.publisher.publish("goal.created", GoalChanged(goal_id=goal.id, title=goal.title, status=goal.status))
    if meta_agent_id:
        await start_meta_session(ctx, goal)
    return goal


async def start_meta_session(ctx: Context, goal: Goal) -> None:
    """The goal's decomposition is itself a task, run by the meta agent as a session with no parent."""
    from nexus.core_api.runs.dispatch import dispatch_task

    task = Task(
        id=new_id("task"),
        title=f"Plan: {goal.title}",
        description=goal.description,
        goal_id=goal.id,
        status="ready",
        assignee_agent_id=goal.meta_agent_id,
        repository_id=goal.repository_id,
        is_meta=True,
        created_by=goal.created_by,
    )
    await task.insert()
    from nexus.core_api.goals.lifecycle import reconcile

    run = await dispatch_task(ctx, task)
    if run is not None:
        await update_document(Goal, goal.id, {"$set": {"meta_run_id": run.id}})
        goal.meta_run_id = run.id
    await reconcile(ctx, goal.id)


async def on_run_finished(ctx: Context, run) -> None:
    """A run's end may move its goal (and may have spent a budget)."""
    from nexus.core_api.budgets.service import check_alerts
    from nexus.core_api.goals.lifecycle import reconcile

    await check_alerts(ctx, goal_id=run.goal_id, agent_id=run.agent_id, run_id=run.id, reason=run.reason)
    await reconcile(ctx, run.goal_id)

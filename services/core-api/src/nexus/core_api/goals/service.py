"""Goals: a lead's intent. A goal with a meta agent starts a meta session that plans child tasks."""

from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError, not_found
from nexus.core_api.goals.schemas import GoalOut
from nexus.core_api.schemas import iso
from nexus.db.cache import cached_get
from nexus.db.documents import Agent, Goal, Repository
from nexus.db.writes import update_document
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
        agent = await Agent.get(meta_agent) or await Agent.find_one({"name": meta_agent})
        if agent is None or agent.deleted:
            raise DomainError(422, f"agent {meta_agent!r} does not exist", field="meta_agent")
        agent_id = agent.id
    if repository:
        repo = await Repository.get(repository) or await Repository.find_one({"name": repository})
        if repo is None or repo.deleted:
            raise DomainError(422, f"repository {repository!r} does not exist", field="repository")
        repo_id = repo.id
    return agent_id, repo_id


async def create_goal(ctx: Context, title: str, description: str, *, created_by: str, meta_agent_id: str | None = None,
                      repository_id: str | None = None, goal_id: str | None = None) -> Goal:
    goal = Goal(id=goal_id or new_id("goal"), title=title, description=description, created_by=created_by,
                meta_agent_id=meta_agent_id, repository_id=repository_id)
    await goal.insert()
    await ctx.publisher.publish("goal.created", GoalChanged(goal_id=goal.id, title=goal.title, status=goal.status))
    if meta_agent_id:
        await start_meta_session(ctx, goal)
    return goal


async def start_meta_session(ctx: Context, goal: Goal) -> None:
    """The goal's decomposition is itself a task, run by the meta agent as a session with no parent."""
    from nexus.core_api.runs.dispatch import dispatch_task
    from nexus.db.documents import Task

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
    run = await dispatch_task(ctx, task)
    if run is not None:
        await update_document(Goal, goal.id, {"$set": {"meta_run_id": run.id}})


async def on_run_finished(ctx: Context, run) -> None:
    """A goal's meta session waits for every child it planned, so its end is the goal's end."""
    if not run.goal_id or run.parent_run_id:
        return
    goal = await Goal.get(run.goal_id)
    if goal is None or goal.meta_run_id != run.id or goal.status != "open":
        return
    status = "done" if run.status == "succeeded" else "failed"
    res = await update_document(
        Goal, goal.id, {"$set": {"status": status, "updated_at": run.ended_at}}, {"status": "open"}
    )
    if res.modified_count == 1:
        await ctx.publisher.publish(
            "goal.status_changed",
            GoalChanged(
                goal_id=goal.id, title=goal.title, status=status, summary=run.summary or run.reason, meta_run_id=run.id
            ),
            correlation_id=goal.id,
        )

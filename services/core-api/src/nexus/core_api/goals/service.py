"""Goals: a lead's intent. A goal with a meta agent starts a meta session that plans child tasks."""

from nexus.core_api.context import Context
from nexus.db.documents import Goal
from nexus.domain.ids import new_id
from nexus.events.payloads import CreateGoal, GoalChanged


async def create_goal(ctx: Context, title: str, description: str, *, created_by: str, meta_agent_id: str | None = None,
                      repository_id: str | None = None) -> Goal:
    goal = Goal(id=new_id("goal"), title=title, description=description, created_by=created_by,
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
        id=new_id("task"), title=f"Plan: {goal.title}", description=goal.description, goal_id=goal.id, status="ready",
        assignee_agent_id=goal.meta_agent_id, repository_id=goal.repository_id, is_meta=True, created_by=goal.created_by,
    )
    await task.insert()
    run = await dispatch_task(ctx, task)
    if run is not None:
        await Goal.get_pymongo_collection().update_one({"_id": goal.id}, {"$set": {"meta_run_id": run.id}})


async def create_goal_from_command(ctx: Context, cmd: CreateGoal) -> Goal:
    return await create_goal(ctx, cmd.title, cmd.description, created_by=cmd.requested_by)

"""Goals: a lead's intent, as stored. Creating one (and its meta session) is the run workflow's
(`workflow.engine.create_goal`)."""

from nexus.core_api.errors import not_found
from nexus.core_api.goals.schemas import GoalOut
from nexus.core_api.schemas import iso
from nexus.db.cache import cached_get
from nexus.db.documents import Goal


def to_out(g: Goal) -> GoalOut:
    return GoalOut(
        id=g.id,
        title=g.title,
        description=g.description,
        status=g.status,
        meta_agent_id=g.meta_agent_id,
        repository_id=g.repository_id,
        meta_run_id=g.meta_run_id,
        created_by=g.created_by,
        created_at=iso(g.created_at),
        updated_at=iso(g.updated_at),
    )


async def get(goal_id: str) -> Goal:
    doc = await cached_get(Goal, goal_id)
    if doc is None:
        raise not_found("goal", goal_id)
    return doc

"""goals' NATS handler: a task that moved may move its goal."""

from nexus.core_api.context import Context
from nexus.core_api.goals.lifecycle import reconcile
from nexus.events import payloads as p
from nexus.events.consumer import Delivery


async def follow_task(ctx: Context, d: Delivery) -> None:
    if isinstance(d.payload, p.TaskChanged) and d.payload.goal_id:
        await reconcile(ctx, d.payload.goal_id)

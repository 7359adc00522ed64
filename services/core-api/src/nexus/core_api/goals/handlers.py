"""goals' NATS handler: a goal follows its tasks. A task of a goal that moved sends `core.follow_goal`
(core-api's own command, on the work queue: at least once, kept until handled); its handler derives the
goal's status again (idempotent: the same command twice, or in another order, moves it to the same place).
A task in no goal sends nothing: core-api once read every task event for this, three of nothing per run."""

from faststream.nats import NatsBroker

from nexus.core_api.commands import command
from nexus.core_api.context import Context
from nexus.core_api.goals.lifecycle import reconcile
from nexus.events.consumer import Delivery
from nexus.events.payloads import FollowGoal


async def follow_goal(ctx: Context, d: Delivery) -> None:
    assert isinstance(d.payload, FollowGoal)
    await reconcile(ctx, d.payload.goal_id)


def subscribe(broker: NatsBroker, ctx: Context) -> None:
    command(broker, ctx, "core.follow_goal")(follow_goal)

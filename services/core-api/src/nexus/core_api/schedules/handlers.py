"""schedules' NATS handler: the worker's clock fires an occurrence of a schedule."""

from faststream.nats import NatsBroker

from nexus.core_api.commands import command
from nexus.core_api.context import Context
from nexus.core_api.schedules.service import fire
from nexus.events.consumer import Delivery
from nexus.events.payloads import FireSchedule


async def on_fire(ctx: Context, d: Delivery) -> None:
    assert isinstance(d.payload, FireSchedule)
    await fire(ctx, d.payload)


def subscribe(broker: NatsBroker, ctx: Context) -> None:
    command(broker, ctx, "core.fire_schedule")(on_fire)

"""sessions' NATS handler: a meta run's plan, heard on its own subject, becomes child tasks (the
run workflow plans them: `workflow.engine.plan_children`)."""

from faststream.nats import NatsBroker

from nexus.core_api.commands import command
from nexus.core_api.context import Context
from nexus.core_api.workflow import engine
from nexus.events.catalog import spec
from nexus.events.consumer import Delivery, Poison
from nexus.events.payloads import PlanChildren


async def on_plan(ctx: Context, d: Delivery) -> None:
    cmd = d.payload
    assert isinstance(cmd, PlanChildren)
    if d.subject != spec("core.plan_children").subject_for(run_id=cmd.run_id):
        raise Poison(f"a plan for run {cmd.run_id} arrived on {d.subject}")  # only a run's own subject is its word
    try:
        await engine.plan_children(ctx, cmd)
    except ValueError as exc:
        raise Poison(str(exc)) from exc


def subscribe(broker: NatsBroker, ctx: Context) -> None:
    command(broker, ctx, "core.plan_children")(on_plan)

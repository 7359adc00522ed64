"""chat_bindings' NATS handler: commands relayed from chat. Each is applied only for a principal whose
binding allows it, and is audited with the chat user and the bound identity. A refused command is
dead-lettered with why."""

import contextlib
import logging
import re
from collections.abc import AsyncIterator

from faststream.nats import NatsBroker

from nexus.core_api.approvals.service import decide
from nexus.core_api.audit.service import record
from nexus.core_api.chat_bindings.service import Refused, actor, check
from nexus.core_api.commands import command
from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError
from nexus.core_api.named import goal_refs
from nexus.core_api.workflow import engine
from nexus.db.documents import Goal
from nexus.domain.roles import Capability
from nexus.events import payloads as p
from nexus.events.consumer import Delivery, Poison

log = logging.getLogger("nexus.core_api.chat_bindings")
GOAL_ID = re.compile(r"^goal_[0-9a-z]{26}$")


async def decide_approval(ctx: Context, cmd: p.DecideApproval) -> None:
    async with _refusals(cmd):
        await _decide(ctx, cmd)


async def create_goal(ctx: Context, cmd: p.CreateGoal) -> None:
    async with _refusals(cmd):
        await _create_goal(ctx, cmd)


async def cancel_run(ctx: Context, cmd: p.CancelRunRequest) -> None:
    async with _refusals(cmd):
        await _cancel(ctx, cmd)


@contextlib.asynccontextmanager
async def _refusals(cmd: object) -> AsyncIterator[None]:
    try:
        yield
    except Refused as exc:
        log.warning("refused %s: %s", type(cmd).__name__, exc)
        raise Poison(f"refused: {exc}") from exc


def subscribe(broker: NatsBroker, ctx: Context) -> None:
    """One subscriber per command subject; the decoder has checked that the payload is the subject's."""

    @command(broker, ctx, "core.decide_approval")
    async def on_decide(ctx: Context, d: Delivery) -> None:
        await decide_approval(ctx, d.payload)

    @command(broker, ctx, "core.create_goal")
    async def on_create_goal(ctx: Context, d: Delivery) -> None:
        await create_goal(ctx, d.payload)

    @command(broker, ctx, "core.cancel_run")
    async def on_cancel_run(ctx: Context, d: Delivery) -> None:
        await cancel_run(ctx, d.payload)


async def _decide(ctx: Context, cmd: p.DecideApproval) -> None:
    binding = await check(cmd.principal, Capability.DECIDE_APPROVALS)
    assert cmd.principal is not None
    try:
        decided, _ = await decide(ctx, cmd.approval_id, cmd.decision, cmd.reason, binding.identity)
    except DomainError as exc:  # decided already (a second press, a redelivery) or unknown: nothing changes
        log.info("decision on %s not applied: %s", cmd.approval_id, exc.detail)
        return
    await record(
        actor(binding, cmd.principal),
        f"approval.{decided.status}",
        f"approvals/{cmd.approval_id}",
        before_id=cmd.approval_id,
        after_id=cmd.approval_id,
    )


async def _create_goal(ctx: Context, cmd: p.CreateGoal) -> None:
    who = None
    if cmd.principal is not None:
        binding = await check(cmd.principal, Capability.MANAGE_WORK)
        who = actor(binding, cmd.principal)
    if cmd.goal_id and not GOAL_ID.match(cmd.goal_id):
        raise Poison(f"goal_id {cmd.goal_id!r} is not a goal id")
    if cmd.goal_id and (stored := await Goal.get(cmd.goal_id)) is not None:
        # A redelivered command creates nothing twice, and does what a handler that died left undone.
        await engine.ensure_planned(ctx, stored)
        return
    try:
        agent_id, repo_id = await goal_refs(cmd.meta_agent or None, cmd.repository or None)
    except DomainError as exc:
        raise Poison(f"{exc.field}: {exc.detail}") from exc
    goal = await engine.create_goal(
        ctx,
        cmd.title,
        cmd.description,
        created_by=who.key_id if who else cmd.requested_by,
        meta_agent_id=agent_id,
        repository_id=repo_id,
        goal_id=cmd.goal_id or None,
    )
    if who is not None:
        await record(who, "goal.create", f"goals/{goal.id}", after_id=goal.id)


async def _cancel(ctx: Context, cmd: p.CancelRunRequest) -> None:
    binding = await check(cmd.principal, Capability.MANAGE_WORK)
    assert cmd.principal is not None
    run, _ = await engine.cancel_run(ctx, cmd.run_id, f"{cmd.reason} by {binding.identity}")
    if run is not None:
        await record(actor(binding, cmd.principal), "run.cancel", f"runs/{cmd.run_id}", before_id=cmd.run_id)

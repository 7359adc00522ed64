"""core-api checks every chat act and read against the bindings itself, whoever relayed it, and audits
acts with the chat user and the bound identity."""

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import msgspec
import pytest

from nexus.core_api.agents import service as agents
from nexus.core_api.agents.schemas import AgentSpec
from nexus.core_api.chat_bindings.handlers import create_goal, decide_approval
from nexus.core_api.chat_bindings.service import bind
from nexus.core_api.chat_queries.responder import answer
from nexus.core_api.context import Context
from nexus.core_api.settings import CoreSettings
from nexus.db.documents import Approval, AuditEntry, Goal, Task, now
from nexus.domain.ids import new_id
from nexus.events.bus import Publisher, connect, ensure_streams
from nexus.events.consumer import Poison
from nexus.events.payloads import ChatPrincipal, CreateGoal, DecideApproval

pytestmark = pytest.mark.infra


@pytest.fixture
async def ctx(fresh_db, nats_url: str, nats_creds: str) -> AsyncIterator[Context]:
    nc = await connect(nats_url, "test-chat", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    yield Context(settings=CoreSettings(nats_url=nats_url), nc=nc, js=js, publisher=Publisher(js, "test"))
    await nc.close()


async def _bound(role: str) -> ChatPrincipal:
    uid = str(uuid.uuid4().int % 10**12)
    await bind("telegram", uid, f"{role}-{uid}@example.com", role, created_by="test")
    return ChatPrincipal(user_id=uid, username=f"u{uid}")


async def test_queries_answer_bound_users_only(ctx) -> None:
    viewer = await _bound("viewer")
    me = await answer("whoami", msgspec.json.encode({"principal": viewer}))
    assert me == {"ok": True, "data": {"identity": f"viewer-{viewer.user_id}@example.com", "role": "viewer"}}
    stranger = ChatPrincipal(user_id="99")
    assert await answer("whoami", msgspec.json.encode({"principal": stranger})) == {"ok": True, "data": None}
    refused = await answer("goals", msgspec.json.encode({"principal": stranger}))
    assert refused["ok"] is False and refused["refused"] is True and "not bound" in refused["error"]
    assert (await answer("goals", msgspec.json.encode({"principal": viewer}))) == {"ok": True, "data": []}
    assert (await answer("status", msgspec.json.encode({"principal": viewer, "args": {"id": "run_nothing"}})))[
        "ok"
    ] is False
    assert (await answer("nonsense", b"{}"))["ok"] is False
    assert (await answer("goals", b"not json"))["ok"] is False


async def test_decisions_need_a_deciding_binding(ctx) -> None:
    viewer, lead = await _bound("viewer"), await _bound("lead")
    apr = Approval(
        id=f"apr_{uuid.uuid4().hex}",
        run_id="run_missing",
        action="command",
        detail="rm -rf build",
        expires_at=now() + timedelta(hours=1),
    )
    await apr.insert()
    for principal, why in (
        (None, "no principal"),
        (viewer, "may not decide approvals"),
        (ChatPrincipal(user_id="98"), "not bound"),
    ):
        with pytest.raises(Poison, match=why):
            await decide_approval(ctx, DecideApproval(approval_id=apr.id, decision="approved", principal=principal))
    assert (await Approval.get(apr.id)).status == "pending"

    await decide_approval(ctx, DecideApproval(approval_id=apr.id, decision="rejected", reason="no", principal=lead))
    decided = await Approval.get(apr.id)
    assert decided.status == "rejected" and decided.decided_by == f"lead-{lead.user_id}@example.com"
    # A second decision (a redelivery, a second press) changes nothing.
    await decide_approval(ctx, DecideApproval(approval_id=apr.id, decision="approved", principal=lead))
    assert (await Approval.get(apr.id)).status == "rejected"
    entry = await AuditEntry.find_one({"resource": f"approvals/{apr.id}"})
    assert (
        entry.action == "approval.rejected"
        and entry.actor == decided.decided_by
        and f"({lead.user_id})" in entry.actor_name
    )


async def test_goal_from_chat_is_checked_and_created_once(ctx) -> None:
    viewer, lead = await _bound("viewer"), await _bound("lead")
    goal_id = "goal_" + "0" * 20 + uuid.uuid4().hex[:6]
    with pytest.raises(Poison, match="may not manage work"):
        await create_goal(ctx, CreateGoal(title="x", goal_id=goal_id, principal=viewer))
    with pytest.raises(Poison, match="meta_agent"):
        await create_goal(ctx, CreateGoal(title="x", goal_id=goal_id, meta_agent="nobody", principal=lead))
    with pytest.raises(Poison, match="not a goal id"):
        await create_goal(ctx, CreateGoal(title="x", goal_id="goal_../../x", principal=lead))
    cmd = CreateGoal(title="Ship it", goal_id=goal_id, principal=lead)
    await create_goal(ctx, cmd)
    await create_goal(ctx, cmd)  # redelivered
    goals = await Goal.find({"_id": goal_id}).to_list()
    assert len(goals) == 1 and goals[0].created_by == f"lead-{lead.user_id}@example.com"
    entry = await AuditEntry.find_one({"resource": f"goals/{goal_id}", "action": "goal.create"})
    assert entry is not None and f"({lead.user_id})" in entry.actor_name


async def test_a_goal_from_chat_stored_by_a_handler_that_died_is_planned_on_redelivery(ctx) -> None:
    """The handler stored the goal and died before its planning task: the command handed out again plans it."""
    lead = await _bound("lead")
    meta = await agents.create(AgentSpec(name=f"planner-{uuid.uuid4().hex[:6]}", system_prompt="You plan."), actor="t")
    goal_id = new_id("goal")
    await Goal(id=goal_id, title="Half made", meta_agent_id=meta.id).insert()  # what the dead handler left
    await create_goal(ctx, CreateGoal(title="Half made", goal_id=goal_id, meta_agent=meta.id, principal=lead))
    planning = await Task.find({"goal_id": goal_id}).to_list()
    assert [t.is_meta for t in planning] == [True]
    await create_goal(ctx, CreateGoal(title="Half made", goal_id=goal_id, meta_agent=meta.id, principal=lead))
    assert await Task.find({"goal_id": goal_id}).count() == 1

"""The session tree on the agent kernel, across two 'runner processes' (two NATS connections)."""

import uuid

from nexus.events.bus import connect
import pytest

from nexus.agent_runner.tree import SessionTree
from nexus.kernel import Message, MessageKind

pytestmark = pytest.mark.infra


@pytest.fixture
async def trees(nats_url, nats_creds):
    ncs = [await connect(nats_url, "tests", creds=nats_creds), await connect(nats_url, "tests", creds=nats_creds)]
    meta_id, child_id = f"ses_meta{uuid.uuid4().hex[:10]}", f"ses_child{uuid.uuid4().hex[:10]}"
    meta = await SessionTree.open(ncs[0], meta_id, lambda: {"sessionId": meta_id, "changes": 3})
    child = await SessionTree.open(ncs[1], child_id, lambda: {"sessionId": child_id, "changes": 1})
    for nc in ncs:  # a tree's subscriptions are not confirmed by a round trip: a runner's next publish orders them
        await nc.flush()
    yield meta, child
    for tree in (meta, child):
        await tree.close()
    for nc in ncs:
        await nc.drain()


async def test_a_child_in_another_process_tells_its_meta_session(trees) -> None:
    meta, child = trees
    assert await child.tell_parent(meta.agent.id, {"run_id": "run_c", "task_id": "task_c", "status": "succeeded"})
    ends = await meta.agent.wait_for({child.agent.id}, timeout_s=10)
    assert ends[child.agent.id]["status"] == "succeeded" and ends[child.agent.id]["run_id"] == "run_c"
    assert meta.agent.heard_over_kernel == {child.agent.id}


async def test_core_api_reports_feed_the_same_agent_without_counting_as_kernel_reports(trees) -> None:
    meta, _ = trees
    await meta.child_finished({"session_id": "ses_crashed", "run_id": "run_x", "task_id": "t", "status": "failed"})
    ends = await meta.agent.wait_for({"ses_crashed"}, timeout_s=10)
    assert ends["ses_crashed"]["status"] == "failed" and not meta.agent.heard_over_kernel


async def test_sessions_answer_status_queries_over_nats(trees) -> None:
    meta, child = trees
    reply = await child.kernel.ask(Message(from_=child.agent.id, to=meta.agent.id, kind=MessageKind.QUERY), timeout=10)
    assert reply.payload == {"sessionId": meta.agent.id, "changes": 3}


async def test_the_kernel_itself_gets_its_reply_though_its_inbox_is_made_only_when_it_first_sends(trees) -> None:
    meta, child = trees
    assert child.kernel.id not in child.kernel.remote._subs  # a session that never sends has no such inbox
    reply = await child.kernel.ask(Message(from_=child.kernel.id, to=meta.agent.id, kind=MessageKind.QUERY), timeout=10)
    assert reply.payload == {"sessionId": meta.agent.id, "changes": 3}


async def test_telling_a_parent_that_is_gone_is_not_fatal(trees) -> None:
    _, child = trees
    assert await child.tell_parent(f"ses_gone{uuid.uuid4().hex[:8]}", {"status": "succeeded"}) is False

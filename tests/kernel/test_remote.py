"""Routing across processes over NATS: same errors, same timeouts as local sends.

Two kernels, each with its own NATS connection, stand for two processes."""

import asyncio
from collections.abc import AsyncIterator

from nexus.events.bus import connect
import pytest

from nexus.kernel import (
    AgentNotFound,
    FunctionAgent,
    MailboxClosed,
    Message,
    MessageKind,
    SendTimeout,
    ShuttingDown,
)
from tests.kernel.helpers import Recorder, eventually, msg

pytestmark = pytest.mark.infra


@pytest.fixture
async def pair(make_kernel, nats_url: str, nats_creds: str) -> AsyncIterator[tuple]:
    connections = [await connect(nats_url, "tests", creds=nats_creds) for _ in range(2)]
    here = make_kernel(send_timeout_ms=200)
    there = make_kernel(mailbox_capacity=1, send_timeout_ms=50)
    await here.connect_nats(connections[0])
    await there.connect_nats(connections[1])
    yield here, there
    await here.shutdown(mode="drop", deadline=1)
    await there.shutdown(mode="drop", deadline=1)
    for nc in connections:
        await nc.close()


async def test_send_and_ask_reach_an_agent_in_another_kernel(pair) -> None:
    here, there = pair
    far = Recorder("far")
    there.spawn(far)
    await there.remote.ready()
    await here.send(msg("far", 1))
    reply = await here.ask(msg("far", 2, MessageKind.QUERY, from_=here.id), timeout=5)
    assert reply.payload == {"seen": 2} and reply.from_ == "far"
    assert far.seen == [1, 2]
    assert here.stats().remote_sent >= 1 and there.stats().remote_received >= 2


async def test_a_remote_handler_can_reply_to_a_local_agent(pair) -> None:
    here, there = pair
    there.spawn(Recorder("far"))
    near = Recorder("near")
    here.spawn(near)
    await there.remote.ready()
    await here.remote.ready()
    await here.send(Message(from_="near", to="far", kind=MessageKind.QUERY, payload="ping"))
    await near.wait_seen(1)
    assert near.seen == [{"seen": "ping"}]


async def test_unknown_id_everywhere_is_agent_not_found(pair) -> None:
    here, _ = pair
    with pytest.raises(AgentNotFound):
        await here.send(msg("nowhere"))
    with pytest.raises(AgentNotFound):
        await here.send(msg("not.a.subject.token"))


async def test_a_full_remote_mailbox_is_send_timeout(pair) -> None:
    here, there = pair
    gate = asyncio.Event()
    busy = Recorder("busy", gate)
    there.spawn(busy)
    await there.remote.ready()
    await here.send(msg("busy", 0))
    await busy.entered.wait()
    await here.send(msg("busy", 1))  # fills its one slot
    with pytest.raises(SendTimeout):
        await here.send(msg("busy", 2))
    gate.set()
    await busy.wait_seen(2)


async def test_a_stopping_remote_agent_is_mailbox_closed(pair) -> None:
    here, there = pair
    gate = asyncio.Event()
    leaving = Recorder("leaving", gate)
    there.spawn(leaving)
    await there.remote.ready()
    await here.send(msg("leaving", 0))
    await leaving.entered.wait()
    stopping = asyncio.ensure_future(there.stop("leaving", deadline=10))
    await eventually(lambda: there.agent_stats("leaving").state == "stopping")
    with pytest.raises(MailboxClosed):
        await here.send(msg("leaving", 1))
    gate.set()
    await stopping


async def test_a_remote_kernel_shutting_down_is_shutting_down(pair) -> None:
    here, there = pair
    gate = asyncio.Event()
    draining = Recorder("draining", gate)
    there.spawn(draining)
    await there.remote.ready()
    await here.send(msg("draining", 0))
    await draining.entered.wait()
    shutting = asyncio.ensure_future(there.shutdown(mode="drain", deadline=10))
    await asyncio.sleep(0)
    with pytest.raises(ShuttingDown):
        await here.send(msg("draining", 1))
    gate.set()
    await shutting


async def test_a_stopped_agent_is_no_longer_reachable(pair) -> None:
    here, there = pair

    async def noop(message: Message) -> None:
        return None

    there.spawn(FunctionAgent("brief", noop), mailbox_capacity=64)  # room: no SendTimeout here
    await there.remote.ready()
    await here.send(msg("brief"))
    sends = [asyncio.create_task(here.send(msg("brief"))) for _ in range(50)]
    await asyncio.sleep(0)
    await there.stop("brief")
    # Sends racing the withdrawal: each one is delivered (it beat the stop) or refused —
    # MailboxClosed while stopping, AgentNotFound once gone — none is left to time out.
    outcomes = await asyncio.gather(*sends, return_exceptions=True)
    assert all(o is None or isinstance(o, (AgentNotFound, MailboxClosed)) for o in outcomes), outcomes
    for _ in range(20):
        with pytest.raises(AgentNotFound):
            await here.send(msg("brief"))


async def test_an_id_respawned_while_its_old_subscription_drains_gets_each_message_once(pair) -> None:
    here, there = pair
    there.spawn(Recorder("again"))
    await there.remote.ready()
    await there.stop("again")
    fresh = Recorder("again")
    there.spawn(fresh, mailbox_capacity=64)  # the old subscription may still be draining: both see the subject
    delivered = 0
    for i in range(40):
        try:
            await here.send(msg("again", i))
            delivered += 1
        except AgentNotFound:
            pass  # between the old UNSUB and the new SUB nobody listens: refused, not lost
    await there.remote.ready()
    await here.send(msg("again", "last"))
    await fresh.wait_seen(delivered + 1)
    assert fresh.seen[-1] == "last" and len(fresh.seen) == delivered + 1, fresh.seen

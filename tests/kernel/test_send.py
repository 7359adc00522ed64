"""send(): routing, ordering, and every way it refuses a message."""

import asyncio

import pytest

from nexus.kernel import (
    AgentNotFound,
    DuplicateAgent,
    FunctionAgent,
    MailboxClosed,
    SendTimeout,
    ShuttingDown,
)
from tests.kernel.helpers import Recorder, eventually, msg


async def test_messages_reach_their_agent_in_order(make_kernel) -> None:
    kernel = make_kernel()
    a, b = Recorder("a"), Recorder("b")
    kernel.spawn(a)
    kernel.spawn(b)
    for i in range(100):
        await kernel.send(msg("a" if i % 2 else "b", i))
    await a.wait_seen(50)
    await b.wait_seen(50)
    assert a.seen == list(range(1, 100, 2))
    assert b.seen == list(range(0, 100, 2))


async def test_unknown_agent_is_agent_not_found(make_kernel) -> None:
    kernel = make_kernel()
    with pytest.raises(AgentNotFound) as info:
        await kernel.send(msg("nobody"))
    assert info.value.agent_id == "nobody"


async def test_spawning_a_duplicate_id_is_an_error_and_keeps_the_first(make_kernel) -> None:
    kernel = make_kernel()
    first, second = Recorder("x"), Recorder("x")
    kernel.spawn(first)
    with pytest.raises(DuplicateAgent):
        kernel.spawn(second)
    await kernel.send(msg("x", "hello"))
    await first.wait_seen(1)
    assert kernel.agent("x") is first and second.seen == []


async def test_full_mailbox_times_out_after_send_timeout(make_kernel) -> None:
    kernel = make_kernel(mailbox_capacity=2, send_timeout_ms=30)
    gate = asyncio.Event()
    slow = Recorder("slow", gate)
    kernel.spawn(slow)
    await kernel.send(msg("slow", 0))
    await slow.entered.wait()  # message 0 is being handled; the mailbox is empty again
    await kernel.send(msg("slow", 1))
    await kernel.send(msg("slow", 2))
    with pytest.raises(SendTimeout):
        await kernel.send(msg("slow", 3))
    assert kernel.agent_stats("slow").depth == 2
    assert kernel.stats().send_timeouts == 1
    gate.set()
    await slow.wait_seen(3)
    assert slow.seen == [0, 1, 2]


async def test_waiting_sender_gets_in_when_room_frees_and_order_is_kept(make_kernel) -> None:
    kernel = make_kernel(mailbox_capacity=1, send_timeout_ms=10_000)
    gate = asyncio.Event()
    slow = Recorder("slow", gate)
    kernel.spawn(slow)
    await kernel.send(msg("slow", 0))
    await slow.entered.wait()
    await kernel.send(msg("slow", 1))
    waiting = [asyncio.ensure_future(kernel.send(msg("slow", i))) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiting)
    gate.set()
    await asyncio.gather(*waiting)
    await slow.wait_seen(5)
    assert slow.seen == [0, 1, 2, 3, 4]


async def test_depth_never_exceeds_capacity_under_many_senders(make_kernel) -> None:
    kernel = make_kernel(mailbox_capacity=8, send_timeout_ms=10_000)
    depths: list[int] = []

    async def handle(message):
        depths.append(kernel.agent_stats("q").depth)
        await asyncio.sleep(0)

    kernel.spawn(FunctionAgent("q", handle))

    async def sender(k: int) -> None:
        for i in range(20):
            await kernel.send(msg("q", (k, i)))
            depths.append(kernel.agent_stats("q").depth)

    await asyncio.gather(*(sender(k) for k in range(10)))
    await eventually(lambda: kernel.agent_stats("q").handled == 200)
    assert max(depths) <= 8
    assert max(depths) == 8  # the bound was actually reached


async def test_send_to_a_stopping_agent_is_mailbox_closed(make_kernel) -> None:
    kernel = make_kernel()
    gate = asyncio.Event()
    agent = Recorder("s", gate)
    kernel.spawn(agent)
    await kernel.send(msg("s", 0))
    await agent.entered.wait()
    stopping = asyncio.ensure_future(kernel.stop("s", deadline=10))
    await asyncio.sleep(0)
    with pytest.raises(MailboxClosed):
        await kernel.send(msg("s", 1))
    gate.set()
    await stopping
    with pytest.raises(AgentNotFound):
        await kernel.send(msg("s", 2))


async def test_blocked_sender_is_told_mailbox_closed_when_agent_stops(make_kernel) -> None:
    kernel = make_kernel(mailbox_capacity=1, send_timeout_ms=10_000)
    gate = asyncio.Event()
    agent = Recorder("s", gate)
    kernel.spawn(agent)
    await kernel.send(msg("s", 0))
    await agent.entered.wait()
    await kernel.send(msg("s", 1))
    blocked = asyncio.ensure_future(kernel.send(msg("s", 2)))
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(kernel.stop("s", deadline=10))
    with pytest.raises(MailboxClosed):
        await blocked
    gate.set()
    await stopping


async def test_send_after_shutdown_is_shutting_down(make_kernel) -> None:
    kernel = make_kernel()
    kernel.spawn(Recorder("a"))
    await kernel.shutdown()
    with pytest.raises(ShuttingDown):
        await kernel.send(msg("a"))
    with pytest.raises(ShuttingDown):
        kernel.spawn(Recorder("b"))


async def test_spawn_rejects_non_agents(make_kernel) -> None:
    kernel = make_kernel()
    with pytest.raises(TypeError):
        kernel.spawn(42)  # type: ignore[arg-type]  # the wrong type on purpose
    with pytest.raises(TypeError):
        kernel.spawn(lambda: "not an agent")  # type: ignore[arg-type]  # the wrong type on purpose

"""stop(), shutdown(drain | drop, deadline), lingering drains and stats."""

import asyncio

import pytest

from nexus.kernel import (
    AgentNotFound,
    FunctionAgent,
    MailboxClosed,
    Message,
    MessageKind,
    ShuttingDown,
)
from tests.kernel.helpers import Recorder, eventually, msg


class Hooked(Recorder):
    def __init__(self, agent_id: str, gate: asyncio.Event | None = None) -> None:
        super().__init__(agent_id, gate)
        self.stopped_after: list[object] | None = None

    async def on_stop(self) -> None:
        self.stopped_after = list(self.seen)


async def test_stop_drain_handles_what_was_queued_then_calls_on_stop(make_kernel) -> None:
    kernel = make_kernel()
    gate = asyncio.Event()
    agent = Hooked("a", gate)
    kernel.spawn(agent)
    for i in range(5):
        await kernel.send(msg("a", i))
    await agent.entered.wait()
    stopping = asyncio.ensure_future(kernel.stop("a", mode="drain", deadline=10))
    await asyncio.sleep(0)
    gate.set()
    await stopping
    assert agent.seen == [0, 1, 2, 3, 4]
    assert agent.stopped_after == [0, 1, 2, 3, 4]
    assert "a" not in kernel


async def test_stop_drop_discards_the_queue_and_fails_queued_asks(make_kernel) -> None:
    kernel = make_kernel()
    gate = asyncio.Event()
    agent = Hooked("a", gate)
    kernel.spawn(agent)
    await kernel.send(msg("a", 0))
    await agent.entered.wait()
    queued_ask = asyncio.ensure_future(kernel.ask(msg("a", 1, MessageKind.QUERY), timeout=10))
    await kernel.send(msg("a", 2))
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(kernel.stop("a", mode="drop", deadline=10))
    await asyncio.sleep(0)
    gate.set()
    await stopping
    with pytest.raises(MailboxClosed):
        await queued_ask
    assert agent.seen == [0]  # the message in hand finished; the queue was dropped


async def test_stop_cancels_a_handler_still_running_at_the_deadline(make_kernel) -> None:
    kernel = make_kernel()
    cancelled = asyncio.Event()

    async def forever(message: Message) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    kernel.spawn(FunctionAgent("f", forever))
    await kernel.send(msg("f"))
    await asyncio.sleep(0)
    await kernel.stop("f", deadline=0.05)
    assert cancelled.is_set()
    assert "f" not in kernel


async def test_an_agent_can_stop_itself(make_kernel) -> None:
    kernel = make_kernel()
    done = asyncio.Event()

    async def quit_now(message: Message) -> None:
        await kernel.stop("self")
        done.set()

    kernel.spawn(FunctionAgent("self", quit_now))
    await kernel.send(msg("self"))
    await done.wait()
    await eventually(lambda: "self" not in kernel)


async def test_stop_unknown_agent_raises(make_kernel) -> None:
    kernel = make_kernel()
    with pytest.raises(AgentNotFound):
        await kernel.stop("nobody")


async def test_shutdown_drain_finishes_queues_and_lets_agents_forward(make_kernel) -> None:
    kernel = make_kernel()
    gate = asyncio.Event()
    sink = Hooked("sink")

    async def forward(message: Message) -> Message:
        await gate.wait()
        return Message(from_="fwd", to="sink", kind=MessageKind.EVENT, payload=message.payload)

    kernel.spawn(FunctionAgent("fwd", forward))
    kernel.spawn(sink)
    for i in range(10):
        await kernel.send(msg("fwd", i))
    shutting = asyncio.ensure_future(kernel.shutdown(mode="drain", deadline=10))
    await asyncio.sleep(0)
    with pytest.raises(ShuttingDown):
        await kernel.send(msg("sink", "from outside"))
    gate.set()
    report = await shutting
    assert sink.seen == list(range(10))  # forwards between agents still flow while draining
    assert sink.stopped_after == list(range(10))
    assert (report.mode, report.drained, report.dropped, report.cancelled) == ("drain", 20, 0, 0)
    assert report.agents == 2


async def test_shutdown_drop_discards_queues_but_lets_running_handlers_finish(make_kernel) -> None:
    kernel = make_kernel()
    gate = asyncio.Event()
    agent = Hooked("a", gate)
    kernel.spawn(agent)
    for i in range(10):
        await kernel.send(msg("a", i))
    await agent.entered.wait()
    shutting = asyncio.ensure_future(kernel.shutdown(mode="drop", deadline=10))
    await asyncio.sleep(0)
    gate.set()
    report = await shutting
    assert agent.seen == [0]
    assert (report.drained, report.dropped, report.cancelled) == (1, 9, 0)


async def test_shutdown_deadline_cancels_what_is_still_running(make_kernel) -> None:
    kernel = make_kernel()
    for i in range(3):
        kernel.spawn(Hooked(f"h{i}", asyncio.Event()))
        await kernel.send(msg(f"h{i}"))
        await kernel.send(msg(f"h{i}"))
    await asyncio.sleep(0)
    report = await kernel.shutdown(mode="drain", deadline=0.05)
    assert (report.cancelled, report.dropped, report.drained) == (3, 3, 0)
    assert kernel.stats().agents == 0


async def test_shutdown_twice_returns_the_same_report(make_kernel) -> None:
    kernel = make_kernel()
    kernel.spawn(Recorder("a"))
    first, second = await asyncio.gather(kernel.shutdown(), kernel.shutdown())
    assert first is second


async def test_async_context_manager_shuts_down(make_kernel) -> None:
    kernel = make_kernel()
    async with kernel:
        kernel.spawn(Recorder("a"))
    assert kernel.closing and "a" not in kernel


async def test_idle_agents_hold_no_task_once_their_drain_stops_lingering(make_kernel) -> None:
    kernel = make_kernel(handle_timeout_ms=200, linger=0.05)  # sweeps every 20 ms
    agents = [Recorder(f"a{i}") for i in range(300)]
    for agent in agents:
        kernel.spawn(agent)
    assert kernel.stats().tasks == 0  # spawning creates no task
    for agent in agents:
        await kernel.send(msg(agent.id))
    assert kernel.stats().tasks == 300
    await eventually(lambda: kernel.stats().handled == 300)
    await eventually(lambda: kernel.stats().tasks == 0)
    await kernel.send(msg("a7", "again"))  # and an agent comes back to life on demand
    await agents[7].wait_seen(2)


async def test_stats_report_depths_and_counters(make_kernel) -> None:
    kernel = make_kernel()
    gate = asyncio.Event()
    agent = Recorder("a", gate)
    kernel.spawn(agent)
    kernel.spawn(Recorder("b"))
    for i in range(4):
        await kernel.send(msg("a", i))
    await agent.entered.wait()
    stats = kernel.stats()
    assert stats.agents == 2
    assert stats.mailbox_depths == {"a": 3, "b": 0}
    assert stats.max_depth == 3
    assert stats.draining == 1
    assert kernel.agent_stats("a").state == "draining"
    assert kernel.agent_stats("b").state == "idle"
    gate.set()
    await agent.wait_seen(4)
    await eventually(lambda: kernel.stats().handled == 4)
    assert kernel.stats(depths=False).mailbox_depths == {}

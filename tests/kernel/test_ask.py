"""ask(): request/response and how it fails."""

import asyncio

import pytest

from nexus.kernel import (
    AgentFailed,
    AgentNotFound,
    AskTimeout,
    FunctionAgent,
    HandleTimeout,
    Message,
    MessageKind,
    ReplyDropped,
    ShuttingDown,
)
from tests.kernel.helpers import Recorder, msg


async def test_ask_returns_the_reply(make_kernel) -> None:
    kernel = make_kernel()
    kernel.spawn(Recorder("r"))
    question = msg("r", 7, MessageKind.QUERY, from_=kernel.id)
    reply = await kernel.ask(question, timeout=5)
    assert reply.payload == {"seen": 7}
    assert reply.reply_to == question.id
    assert kernel.stats().pending_asks == 0


async def test_many_concurrent_asks_each_get_their_own_reply(make_kernel) -> None:
    kernel = make_kernel()
    for i in range(5):
        kernel.spawn(Recorder(f"r{i}"))
    replies = await asyncio.gather(*(kernel.ask(msg(f"r{i % 5}", i, MessageKind.QUERY), timeout=5) for i in range(200)))
    assert [r.payload["seen"] for r in replies] == list(range(200))


async def test_ask_times_out_when_no_reply_comes(make_kernel) -> None:
    kernel = make_kernel()
    kernel.spawn(Recorder("silent"))  # answers only queries
    with pytest.raises(AskTimeout):
        await kernel.ask(msg("silent", kind=MessageKind.EVENT), timeout=0.05)
    assert kernel.stats().pending_asks == 0


async def test_late_reply_after_ask_timeout_is_reported_not_lost_silently(make_kernel, reports) -> None:
    kernel = make_kernel()
    gate = asyncio.Event()
    kernel.spawn(Recorder("late", gate))
    with pytest.raises(AskTimeout):
        await kernel.ask(msg("late", 1, MessageKind.QUERY, from_=kernel.id), timeout=0.05)
    gate.set()
    dropped = await reports.wait_for(ReplyDropped)
    assert dropped[0].agent_id == kernel.id


async def test_ask_to_unknown_agent_raises_agent_not_found(make_kernel) -> None:
    kernel = make_kernel()
    with pytest.raises(AgentNotFound):
        await kernel.ask(msg("ghost", kind=MessageKind.QUERY), timeout=1)


async def test_ask_fails_with_agent_failed_when_the_handler_raises(make_kernel) -> None:
    kernel = make_kernel()

    async def boom(message: Message) -> None:
        raise RuntimeError("kaput")

    kernel.spawn(FunctionAgent("boom", boom))
    with pytest.raises(AgentFailed) as info:
        await kernel.ask(msg("boom", kind=MessageKind.QUERY), timeout=5)
    assert isinstance(info.value.__cause__, RuntimeError)


async def test_ask_fails_with_handle_timeout_when_the_handler_hangs(make_kernel) -> None:
    kernel = make_kernel(handle_timeout_ms=50)
    kernel.spawn(Recorder("hang", asyncio.Event()))
    with pytest.raises(HandleTimeout):
        await kernel.ask(msg("hang", kind=MessageKind.QUERY), timeout=10)


async def test_ask_cannot_reuse_a_pending_message_id(make_kernel) -> None:
    kernel = make_kernel()
    gate = asyncio.Event()
    kernel.spawn(Recorder("r", gate))
    question = msg("r", kind=MessageKind.QUERY)
    first = asyncio.ensure_future(kernel.ask(question, timeout=5))
    await asyncio.sleep(0)
    with pytest.raises(ValueError):
        await kernel.ask(question, timeout=5)
    gate.set()
    await first


async def test_pending_ask_fails_at_shutdown(make_kernel) -> None:
    kernel = make_kernel()
    kernel.spawn(Recorder("r", asyncio.Event()))
    pending = asyncio.ensure_future(kernel.ask(msg("r", kind=MessageKind.QUERY), timeout=30))
    await asyncio.sleep(0)
    await kernel.shutdown(mode="drop", deadline=0.05)
    with pytest.raises(ShuttingDown):
        await pending


async def test_an_agent_can_ask_another_from_its_handler(make_kernel) -> None:
    kernel = make_kernel()
    kernel.spawn(Recorder("oracle"))

    async def relay(message: Message) -> Message:
        answer = await kernel.ask(Message(from_="relay", to="oracle", kind=MessageKind.QUERY, payload=message.payload))
        return message.reply("relay", {"via": answer.payload})

    kernel.spawn(FunctionAgent("relay", relay))
    reply = await kernel.ask(msg("relay", 5, MessageKind.QUERY), timeout=5)
    assert reply.payload == {"via": {"seen": 5}}

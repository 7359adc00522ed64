"""Handle timeouts (watchdog, no timer per message) and reply routing that cannot deadlock."""

import asyncio

from nexus.kernel import (
    AgentFailed,
    FunctionAgent,
    HandleTimeout,
    Message,
    MessageKind,
    ReplyDropped,
)
from tests.kernel.helpers import Recorder, eventually, msg


async def test_hung_handler_is_cancelled_reported_and_the_agent_goes_on(make_kernel, reports) -> None:
    kernel = make_kernel(handle_timeout_ms=50)
    cancelled = asyncio.Event()
    seen: list[int] = []

    async def handle(message: Message) -> None:
        if message.payload == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
        seen.append(message.payload)

    kernel.spawn(FunctionAgent("h", handle))
    await kernel.send(msg("h", "hang"))
    await kernel.send(msg("h", 1))
    [timeout] = await reports.wait_for(HandleTimeout)
    assert timeout.agent_id == "h"
    await eventually(lambda: seen == [1])
    assert cancelled.is_set()
    stats = kernel.agent_stats("h")
    assert (stats.timeouts, stats.handled, stats.failures) == (1, 1, 0)


async def test_handler_that_swallows_cancellation_is_still_reported_and_its_reply_discarded(
    make_kernel, reports
) -> None:
    kernel = make_kernel(handle_timeout_ms=50)
    release = asyncio.Event()

    async def stubborn(message: Message) -> Message:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # ignores the cancel and carries on
        return message.reply("s", "too late")

    kernel.spawn(FunctionAgent("s", stubborn))
    ask = asyncio.ensure_future(kernel.ask(msg("s", kind=MessageKind.QUERY), timeout=10))
    await reports.wait_for(HandleTimeout)
    release.set()
    try:
        await ask
    except HandleTimeout:
        pass
    else:  # pragma: no cover - the assertion below explains the failure
        raise AssertionError("a timed-out handler's reply must not be delivered")
    await eventually(lambda: kernel.agent_stats("s").timeouts == 1)
    assert kernel.agent_stats("s").handled == 0


async def test_slow_but_progressing_handlers_are_not_timed_out(make_kernel, reports) -> None:
    # Ten messages of ~20 ms each take far longer than the 100 ms timeout in total, but
    # each one alone is well within it: the watchdog's clock restarts per message.
    kernel = make_kernel(handle_timeout_ms=100)

    async def slowish(message: Message) -> None:
        await asyncio.sleep(0.02)

    kernel.spawn(FunctionAgent("w", slowish))
    for i in range(10):
        await kernel.send(msg("w", i))
    await eventually(lambda: kernel.agent_stats("w").handled == 10)
    assert reports.of(HandleTimeout) == []


async def test_idle_time_before_a_message_does_not_count_against_it(make_kernel, reports) -> None:
    kernel = make_kernel(handle_timeout_ms=100, linger=5.0)

    async def work(message: Message) -> None:
        await asyncio.sleep(message.payload)

    kernel.spawn(FunctionAgent("w", work))
    await kernel.send(msg("w", 0))
    await eventually(lambda: kernel.agent_stats("w").handled == 1)
    await asyncio.sleep(0.3)  # the drain lingers idle far past the handle timeout
    await kernel.send(msg("w", 0.03))
    await eventually(lambda: kernel.agent_stats("w").handled == 2)
    assert reports.of(HandleTimeout) == []


async def test_per_agent_handle_timeout_overrides_the_kernel_default(make_kernel, reports) -> None:
    kernel = make_kernel(handle_timeout_ms=60_000)
    kernel.spawn(Recorder("quick", asyncio.Event()), handle_timeout=0.05)
    await kernel.send(msg("quick"))
    [timeout] = await reports.wait_for(HandleTimeout)
    assert timeout.agent_id == "quick"


async def test_on_start_that_hangs_is_a_failure(make_kernel, reports) -> None:
    kernel = make_kernel(handle_timeout_ms=50)

    class Stuck(Recorder):
        async def on_start(self, kernel) -> None:
            await asyncio.Event().wait()

    kernel.spawn(Stuck("stuck"))
    [failure] = await reports.wait_for(AgentFailed)
    assert isinstance(failure.__cause__, HandleTimeout)
    await eventually(lambda: "stuck" not in kernel)


async def test_agents_replying_into_each_others_full_mailboxes_do_not_deadlock(make_kernel, reports) -> None:
    # a and b each hold a command in a full mailbox (capacity 1) while handling another;
    # both handlers then return a message to the other. Without a timeout on routing
    # results, each drain would wait forever for the other. With it, both results are
    # dropped and reported after the send timeout and everything after goes through.
    kernel = make_kernel(mailbox_capacity=1, send_timeout_ms=50)
    gate = asyncio.Event()
    entered = {"a": asyncio.Event(), "b": asyncio.Event()}
    handled: list[tuple[str, str]] = []

    def agent(me: str, other: str) -> FunctionAgent:
        async def handle(message: Message) -> Message | None:
            entered[me].set()
            await gate.wait()
            handled.append((me, message.kind))
            if message.kind == MessageKind.COMMAND:
                return Message(from_=me, to=other, kind=MessageKind.EVENT, payload=message.payload)
            return None

        return FunctionAgent(me, handle)

    kernel.spawn(agent("a", "b"))
    kernel.spawn(agent("b", "a"))
    await kernel.send(msg("a", 1))
    await kernel.send(msg("b", 1))
    await entered["a"].wait()
    await entered["b"].wait()
    await kernel.send(msg("a", 2))  # both mailboxes are now full
    await kernel.send(msg("b", 2))
    gate.set()
    dropped = await reports.wait_for(ReplyDropped, count=2)
    assert {d.agent_id for d in dropped} == {"a", "b"}
    await eventually(lambda: kernel.stats().handled == len(handled) and kernel.stats().draining == 0)
    assert sorted(h for h in handled if h[1] == MessageKind.COMMAND) == [("a", "Command")] * 2 + [("b", "Command")] * 2

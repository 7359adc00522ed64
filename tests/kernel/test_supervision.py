"""Restart policies: never, on_failure with backoff and a cap."""

import asyncio

import pytest

from nexus.kernel import (
    AgentFailed,
    AgentNotFound,
    FunctionAgent,
    Message,
    MessageKind,
    RestartPolicy,
)
from tests.kernel.helpers import eventually, msg


class Fragile:
    """Raises on payload "boom"; counts instances so tests can tell a restart made a new one."""

    made = 0

    def __init__(self, agent_id: str = "f") -> None:
        Fragile.made += 1
        self.instance = Fragile.made
        self.id = agent_id
        self.name = agent_id
        self.seen: list[object] = []
        self.started = 0
        self.stopped = asyncio.Event()

    async def on_start(self, kernel) -> None:
        self.started += 1

    async def on_stop(self) -> None:
        self.stopped.set()

    async def handle(self, message: Message) -> Message | None:
        if message.payload == "boom":
            raise RuntimeError("boom")
        self.seen.append(message.payload)
        if message.kind == MessageKind.QUERY:
            return message.reply(self.id, {"instance": self.instance, "seen": list(self.seen)})
        return None


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy.on_failure(backoff=0.01, max_backoff=0.04)
    assert [policy.delay(n) for n in range(5)] == [0.01, 0.02, 0.04, 0.04, 0.04]


async def test_never_policy_removes_the_agent_and_fails_what_was_queued(make_kernel, reports) -> None:
    kernel = make_kernel()
    gate = asyncio.Event()
    stopped = asyncio.Event()

    class Once:
        id = name = "once"

        async def handle(self, message: Message) -> None:
            await gate.wait()
            raise RuntimeError("broken")

        async def on_stop(self) -> None:
            stopped.set()

    kernel.spawn(Once())
    await kernel.send(msg("once", 1))
    queued = asyncio.ensure_future(kernel.ask(msg("once", 2, MessageKind.QUERY), timeout=10))
    await asyncio.sleep(0)
    gate.set()
    [failure] = await reports.wait_for(AgentFailed)
    assert isinstance(failure.__cause__, RuntimeError)
    with pytest.raises(AgentFailed):
        await queued  # dropped with the agent, and its asker told why
    await stopped.wait()
    assert "once" not in kernel
    with pytest.raises(AgentNotFound):
        await kernel.send(msg("once"))


async def test_on_failure_restarts_a_fresh_instance_from_the_factory(make_kernel, reports) -> None:
    kernel = make_kernel()
    kernel.spawn(lambda: Fragile("f"), restart=RestartPolicy.on_failure(backoff=0.001))
    first = kernel.agent("f")
    await kernel.send(msg("f", "before"))
    await kernel.send(msg("f", "boom"))
    await kernel.send(msg("f", "after"))  # queued during the failure: kept for the new instance
    reply = await kernel.ask(msg("f", "q", MessageKind.QUERY), timeout=5)
    second = kernel.agent("f")
    assert second is not first
    assert reply.payload == {"instance": second.instance, "seen": ["after", "q"]}
    assert first.seen == ["before"]
    assert second.started == 1  # on_start ran for the new instance
    await first.stopped.wait()  # the replaced instance was told to stop
    stats = kernel.agent_stats("f")
    assert (stats.restarts, stats.failures) == (1, 1)
    assert len(reports.of(AgentFailed)) == 1


async def test_on_failure_with_an_instance_reuses_it(make_kernel) -> None:
    kernel = make_kernel()
    agent = Fragile("same")
    kernel.spawn(agent, restart=RestartPolicy.on_failure(backoff=0.001))
    await kernel.send(msg("same", "boom"))
    reply = await kernel.ask(msg("same", "q", MessageKind.QUERY), timeout=5)
    assert kernel.agent("same") is agent
    assert reply.payload["instance"] == agent.instance
    assert agent.started == 2  # once at spawn, once at restart


async def test_messages_sent_during_the_backoff_are_handled_after_it(make_kernel) -> None:
    kernel = make_kernel()
    kernel.spawn(lambda: Fragile("b"), restart=RestartPolicy.on_failure(backoff=0.2))
    await kernel.send(msg("b", "boom"))
    await eventually(lambda: kernel.agent_stats("b").state == "restarting")
    await kernel.send(msg("b", "during"))
    assert kernel.agent_stats("b").depth == 1
    await eventually(lambda: kernel.agent_stats("b").handled == 1)
    assert kernel.agent("b").seen == ["during"]


async def test_restarts_are_capped_then_the_agent_leaves(make_kernel, reports) -> None:
    kernel = make_kernel()
    policy = RestartPolicy.on_failure(backoff=0.001, max_restarts=2, window=60)
    kernel.spawn(lambda: Fragile("c"), restart=policy)
    for _ in range(3):
        await eventually(lambda: "c" not in kernel or kernel.agent_stats("c").state != "restarting")
        if "c" in kernel:
            await kernel.send(msg("c", "boom"))
        await reports.wait_for(AgentFailed, count=len(reports.of(AgentFailed)) + 1)
    await eventually(lambda: "c" not in kernel)
    assert len(reports.of(AgentFailed)) == 3


async def test_report_failure_restarts_an_idle_agent(make_kernel, reports) -> None:
    kernel = make_kernel()
    kernel.spawn(lambda: Fragile("r"), restart=RestartPolicy.on_failure(backoff=0.001))
    first = kernel.agent("r")
    kernel.report_failure("r", ConnectionResetError("backend died"))
    [failure] = await reports.wait_for(AgentFailed)
    assert isinstance(failure.__cause__, ConnectionResetError)
    await eventually(lambda: kernel.agent_stats("r").restarts == 1)
    assert kernel.agent("r") is not first


async def test_report_failure_interrupts_a_running_handler(make_kernel, reports) -> None:
    kernel = make_kernel()
    entered = asyncio.Event()

    async def wait_forever(message: Message) -> None:
        entered.set()
        await asyncio.Event().wait()

    kernel.spawn(FunctionAgent("w", wait_forever))
    asking = asyncio.ensure_future(kernel.ask(msg("w", kind=MessageKind.QUERY), timeout=10))
    await entered.wait()
    kernel.report_failure("w", ConnectionResetError("gone"))
    with pytest.raises(AgentFailed):
        await asking
    await eventually(lambda: "w" not in kernel)


async def test_a_factory_that_changes_the_id_makes_the_agent_leave(make_kernel, reports) -> None:
    kernel = make_kernel()
    ids = iter(["stable", "drifted", "drifted"])
    kernel.spawn(lambda: Fragile(next(ids)), restart=RestartPolicy.on_failure(backoff=0.001, max_restarts=1))
    await kernel.send(msg("stable", "boom"))
    await eventually(lambda: "stable" not in kernel)
    assert any(isinstance(f.__cause__, ValueError) for f in reports.of(AgentFailed))

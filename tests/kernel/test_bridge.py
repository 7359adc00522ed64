"""Bridges: agents as child processes speaking NDJSON, in Python and JavaScript."""

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from nexus.kernel import (
    AgentFailed,
    BridgeError,
    BridgeProtocolError,
    MessageKind,
    RestartPolicy,
    SendTimeout,
)
from nexus.kernel.bridge import BridgeAgent, BridgeExited, spawn_bridge
from tests.kernel.helpers import Recorder, eventually, msg

ROOT = Path(__file__).resolve().parents[2]
CHILDREN = Path(__file__).parent / "bridge_children"
PY_EXAMPLE = [sys.executable, str(ROOT / "examples/bridges/python/example_agent.py")]
NODE = shutil.which("node")
JS_EXAMPLE = [NODE or "node", str(ROOT / "examples/bridges/js/example_agent.js")]


def child(name: str) -> list[str]:
    return [sys.executable, str(CHILDREN / f"{name}.py")]


def query(to: str, payload: object):
    return msg(to, payload, MessageKind.QUERY)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(PY_EXAMPLE, id="python"),
        pytest.param(
            JS_EXAMPLE,
            id="js",
            marks=pytest.mark.skipif(NODE is None and not os.environ.get("CI"), reason="node not installed"),
        ),
    ],
)
async def test_example_agent_answers_asks_pipelined(make_kernel, command: list[str]) -> None:
    kernel = make_kernel()
    agent_id = await spawn_bridge(kernel, command)
    reply = await kernel.ask(query(agent_id, {"operation": "add", "a": 40, "b": 2}), timeout=10)
    assert reply.payload["result"] == 42
    assert reply.from_ == agent_id
    replies = await asyncio.gather(*(kernel.ask(query(agent_id, {"echo": i}), timeout=20) for i in range(300)))
    assert [r.payload["echo"] for r in replies] == list(range(300))
    bridge = kernel.agent(agent_id)
    assert isinstance(bridge, BridgeAgent)
    await kernel.stop(agent_id)
    assert bridge.pipes is not None and await bridge.pipes.exited == 0  # it obeyed the shutdown line


async def test_kernel_can_choose_the_childs_id(make_kernel) -> None:
    kernel = make_kernel()
    agent_id = await spawn_bridge(kernel, PY_EXAMPLE, id="calc-1")
    assert agent_id == "calc-1"
    assert (await kernel.ask(query("calc-1", {"echo": "hi"}), timeout=10)).payload == {"echo": "hi"}


async def test_malformed_lines_are_reported_and_skipped(make_kernel, reports) -> None:
    kernel = make_kernel()
    agent_id = await spawn_bridge(kernel, child("chatty"))
    await reports.wait_for(BridgeProtocolError, count=4)
    assert (await kernel.ask(query(agent_id, "hello"), timeout=10)).payload == {"echo": "hello"}
    assert (await kernel.ask(query(agent_id, "garble"), timeout=10)).payload == {"echo": "garble"}
    await reports.wait_for(BridgeProtocolError, count=8)
    assert kernel.agent(agent_id).malformed == 8
    assert all(e.agent_id == agent_id for e in reports.of(BridgeProtocolError))


async def test_a_handler_error_in_the_child_fails_the_ask_and_the_child_lives_on(make_kernel, reports) -> None:
    kernel = make_kernel()
    agent_id = await spawn_bridge(kernel, child("failing"))
    with pytest.raises(AgentFailed, match="no can do"):
        await kernel.ask(query(agent_id, "fail"), timeout=10)
    assert (await kernel.ask(query(agent_id, "fine"), timeout=10)).payload == {"ok": "fine"}


async def test_a_crashing_child_is_noticed_without_further_traffic(make_kernel, reports) -> None:
    kernel = make_kernel()
    agent_id = await spawn_bridge(kernel, child("crashy"))
    with pytest.raises(AgentFailed):
        await kernel.ask(query(agent_id, "crash"), timeout=10)  # in flight when the child died
    [failure] = await reports.wait_for(AgentFailed)
    assert isinstance(failure.__cause__, BridgeExited)
    assert "code 3" in str(failure.__cause__)
    await eventually(lambda: agent_id not in kernel)  # restart policy "never"


async def test_a_crashed_child_is_restarted_under_on_failure(make_kernel, reports) -> None:
    kernel = make_kernel()
    agent_id = await spawn_bridge(kernel, child("crashy"), restart=RestartPolicy.on_failure(backoff=0.01))
    first_pid = (await kernel.ask(query(agent_id, 1), timeout=10)).payload["pid"]
    await kernel.send(msg(agent_id, "crash"))
    await reports.wait_for(AgentFailed)
    await eventually(lambda: kernel.agent_stats(agent_id).restarts == 1)
    reply = await kernel.ask(query(agent_id, 2), timeout=10)
    assert reply.payload["pid"] != first_pid and reply.payload["echo"] == 2


async def test_the_outbox_is_bounded_when_the_child_stops_reading(make_kernel) -> None:
    kernel = make_kernel(mailbox_capacity=2, send_timeout_ms=50, handle_timeout_ms=60_000)
    agent_id = await spawn_bridge(kernel, child("deaf"), outbox_capacity=3, stop_grace=0.2)
    bridge = kernel.agent(agent_id)
    big = "x" * 200_000  # a few of these fill the pipe and the transport buffer
    depths = []
    with pytest.raises(SendTimeout):
        for _ in range(200):
            await kernel.send(msg(agent_id, big))
            depths.append(bridge.outbox_depth)
    assert max(depths) <= 3
    assert kernel.agent_stats(agent_id).depth <= 2
    await kernel.stop(agent_id, mode="drop", deadline=0.1)  # it ignores shutdown and SIGTERM: killed
    assert bridge.pipes is not None and bridge.pipes.exited.done()


async def test_a_child_that_never_registers_is_an_error(make_kernel) -> None:
    kernel = make_kernel()
    with pytest.raises(BridgeError, match="register"):
        await spawn_bridge(kernel, child("mute"), register_timeout=0.3, stop_grace=0.2)


async def test_a_child_that_exits_before_registering_is_an_error(make_kernel) -> None:
    kernel = make_kernel()
    with pytest.raises(BridgeError, match="code 2"):
        await spawn_bridge(kernel, child("quitter"))


async def test_a_command_that_cannot_start_is_an_error(make_kernel) -> None:
    kernel = make_kernel()
    with pytest.raises(BridgeError, match="cannot start"):
        await spawn_bridge(kernel, ["/nonexistent/agent"])


async def test_a_child_can_ask_and_message_kernel_agents(make_kernel) -> None:
    kernel = make_kernel()
    oracle = Recorder("oracle")
    kernel.spawn(oracle)
    await spawn_bridge(kernel, child("asker"))
    reply = await kernel.ask(query("asker", {"ask": "oracle"}), timeout=10)
    assert reply.payload == {"got": {"seen": {"from_child": True}}}
    await oracle.wait_seen(2)
    assert oracle.seen == [{"from_child": True}, "side note"]


async def test_kernel_shutdown_stops_children_gracefully(make_kernel) -> None:
    kernel = make_kernel()
    agent_id = await spawn_bridge(kernel, PY_EXAMPLE)
    bridge = kernel.agent(agent_id)
    await kernel.send(msg(agent_id, {"echo": 1}))
    report = await kernel.shutdown(mode="drain", deadline=5)
    assert report.agents == 1
    assert bridge.pipes is not None and await bridge.pipes.exited == 0


def _running(cmdline: str) -> bool:
    return subprocess.run(["pgrep", "-f", f"^{cmdline}$"], capture_output=True, check=False).returncode == 0


@pytest.mark.parametrize("own_group", [True, False])
async def test_a_child_in_its_own_group_takes_what_it_started_with_it(make_kernel, own_group: bool) -> None:
    grandchild = f"sleep 300.{uuid.uuid4().int % 10**9:09d}"
    kernel = make_kernel()
    agent_id = await spawn_bridge(kernel, [*child("spawner"), grandchild], own_group=own_group)
    await eventually(lambda: _running(grandchild))
    await kernel.stop(agent_id)
    try:
        if own_group:
            await eventually(lambda: not _running(grandchild))
        else:  # without a group of its own, a grandchild outlives the bridge child (why a run's CLI gets one)
            assert _running(grandchild)
    finally:
        subprocess.run(["pkill", "-f", f"^{grandchild}$"], check=False)

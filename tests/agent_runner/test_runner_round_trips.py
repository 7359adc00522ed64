"""What a run says to NATS, read off the wire: a recording proxy sits between the runner (its own
process, as the worker starts it) and the real nats-server. Past connecting, a trivial run waits for
the server only for its events' acknowledgements — no PING to confirm a subscription, none to drain
at exit — and subscribes to nothing but its replies: its session's kernel inbox, which only children
it plans may write to, is subscribed when it plans them, before the plan goes out. A run that waits for
core-api makes the one consumer it waits on, without a lookup first."""

import asyncio
from urllib.parse import urlparse

import msgspec
import pytest

from nexus.events.bus import Publisher, connect
from nexus.events.envelope import decode_raw
from nexus.events.payloads import ChildFinished, PlanChildren
from tests.agent_runner.test_runner_support import (  # noqa: F401 — fixtures and helpers, used by name
    config,
    decide,
    final_status,
    js,
    read_events,
    start_runner,
    wait_event,
)

pytestmark = pytest.mark.infra


class RecordingProxy:
    """Forwards TCP connections to nats-server, keeping every byte each client sent."""

    def __init__(self, upstream: str) -> None:
        parts = urlparse(upstream)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 4222
        self.sent: list[bytearray] = []  # per connection, in the order they were opened
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"nats://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        record = bytearray()
        self.sent.append(record)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bytearray | None) -> None:
            try:
                while data := await src.read(65536):
                    if keep is not None:
                        keep += data
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, record), pipe(up_reader, writer, None))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


def run_wire(proxy: RecordingProxy, run_id: str) -> list[bytes]:
    """The protocol lines the run's client connection sent: the one that says the session opened (a cold
    runner's first event goes out before it, on a plain socket of its own)."""
    session = f"HPUB nexus.run.{run_id}.session ".encode()
    (wire,) = [bytes(sent) for sent in proxy.sent if session in sent]
    return wire.split(b"\r\n")


async def test_a_trivial_run_waits_on_nats_only_for_its_acks(js, nats_url, tmp_path) -> None:
    proxy = RecordingProxy(nats_url)
    url = await proxy.start()
    try:
        cfg = config("steps:\n  - say: done\n")
        r = await start_runner(tmp_path, url, cfg)
        assert await r.exit_code() == 0, r.log()
    finally:
        await proxy.close()
    events = await read_events(js, cfg.run_id)
    assert final_status(events)["status"] == "succeeded"
    assert [e["type"] for _, e in events].count("run.status") == 2  # running and succeeded: every event stored
    lines = run_wire(proxy, cfg.run_id)
    # The one PING is the handshake's (CONNECT, then PING): nothing after it waits on a PONG.
    assert [i for i, line in enumerate(lines) if line == b"PING"] == [1]  # (no message: CONNECT carries the JWT)
    assert lines[0].startswith(b"CONNECT ")
    # Its connection subscribes to its replies (JetStream's acks) and nothing more: a session that plans
    # no children and has no parent to tell keeps no kernel inbox (only its children could write there).
    subscriptions = [line.split()[1] for line in lines if line.startswith(b"SUB ")]
    assert len(subscriptions) == 1 and subscriptions[0].startswith(f"_INBOX.{cfg.run_id}.".encode()), subscriptions
    assert not any(line.startswith(b"UNSUB ") for line in lines)


PLANNER = "steps:\n  - tool_calls: [{name: spawn_child, args: {title: a, target_files: [a.txt]}}]\n  - say: done\n"


async def test_a_meta_session_subscribes_its_inbox_before_its_plan_goes_out(js, nats_url, nats_creds, tmp_path) -> None:
    plans: asyncio.Queue = asyncio.Queue()

    async def on_plan(msg) -> None:
        plans.put_nowait(msgspec.json.decode(decode_raw(msg.data).data, type=PlanChildren))

    nc = await connect(nats_url, "tests", creds=nats_creds)
    await nc.subscribe("nexus.cmd.core.plan_children.*", cb=on_plan)
    await nc.flush()
    proxy = RecordingProxy(nats_url)
    url = await proxy.start()
    cfg = config(PLANNER, meta=True, tools=["spawn_child", "finish"])
    try:
        r = await start_runner(tmp_path, url, cfg)
        plan = await asyncio.wait_for(plans.get(), 60)
        while plan.run_id != cfg.run_id:
            plan = await asyncio.wait_for(plans.get(), 60)
        (child,) = plan.children
        await Publisher(js, "core-api").publish(
            "run.child_finished",
            ChildFinished(session_id=child.session_id, run_id="run_c", task_id="task_c", status="succeeded"),
            run_id=cfg.run_id,
        )
        assert await r.exit_code() == 0, r.log()
    finally:
        await proxy.close()
        await nc.drain()
    lines = run_wire(proxy, cfg.run_id)
    subscribed = next(
        i for i, line in enumerate(lines) if line.startswith(f"SUB nexus.agent.{cfg.session_id}.inbox ".encode())
    )
    planned = next(
        i
        for i, line in enumerate(lines)
        if line.startswith(f"HPUB nexus.cmd.core.plan_children.{cfg.run_id} ".encode())
    )
    # The server takes a connection's protocol in order: the inbox is in place before any child exists.
    assert subscribed < planned


ASKING = "steps:\n  - tool_calls: [{name: run_command, args: {cmd: 'touch a.txt'}}]\n  - say: done\n"


async def test_a_run_that_waits_for_an_approval_makes_only_that_consumer_and_no_lookup(js, nats_url, tmp_path) -> None:
    proxy = RecordingProxy(nats_url)
    url = await proxy.start()
    cfg = config(ASKING, permissions={"commands": {"allow": ["echo *"], "default": "ask"}})
    try:
        r = await start_runner(tmp_path, url, cfg)
        requested = await wait_event(js, cfg.run_id, lambda t, d: t == "run.approval_requested")
        await decide(js, cfg.run_id, requested["data"]["approval_id"], "approved")
        assert await r.exit_code() == 0, r.log()
    finally:
        await proxy.close()
    assert final_status(await read_events(js, cfg.run_id))["status"] == "succeeded"
    api = [line.split()[1].decode() for line in run_wire(proxy, cfg.run_id) if line.startswith(b"PUB $JS.API.")]
    consumer = f"{cfg.run_id}-a1-approval_decided"
    # One create, straight away (the name is this attempt's own: nothing to look up first), and its delete at the end;
    # nothing for the children's ends, which a run without children never waits for.
    assert [a for a in api if ".CONSUMER.CREATE." in a or ".CONSUMER.INFO." in a] == [
        f"$JS.API.CONSUMER.CREATE.NEXUS_RUNS.{consumer}.nexus.run.{cfg.run_id}.approval_decided"
    ], api
    assert [a for a in api if ".CONSUMER.DELETE." in a] == [f"$JS.API.CONSUMER.DELETE.NEXUS_RUNS.{consumer}"], api
    assert not [a for a in api if "child_finished" in a], api

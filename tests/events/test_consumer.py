"""The bus against a real JetStream: dedupe by envelope id, dead letters, bounded redelivery."""

import asyncio
import uuid

import msgspec
import pytest

from nexus.events.bus import Publisher, connect, ensure_streams
from nexus.events.catalog import DLQ_STREAM, RUNS_STREAM
from nexus.events.consumer import Delivery, Poison, consume, pull_config, pulling
from nexus.events.envelope import decode_raw
from nexus.events.payloads import DeadLetter, RunLog
from nexus.events.pull import ack_all

pytestmark = pytest.mark.infra


@pytest.fixture
async def js(nats_url, nats_creds):
    nc = await connect(nats_url, "test-events", creds=nats_creds)
    js = nc.jetstream()
    await ensure_streams(js)
    yield js
    await nc.drain()


async def _settled(js, durable: str, tries: int) -> None:
    """Every message of `durable` acked or terminated: nothing pending, nothing awaiting an ack."""
    for _ in range(tries):
        info = await js.consumer_info(RUNS_STREAM, durable)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{durable} never settled: {info}")


async def _collect(js, run_id: str, handler, *, max_deliver: int = 3, until: int) -> list[Delivery]:
    seen: list[Delivery] = []
    stop = asyncio.Event()

    async def wrapped(d: Delivery) -> None:
        seen.append(d)
        await handler(d)

    durable = f"t-{uuid.uuid4().hex[:8]}"
    task = asyncio.create_task(
        consume(
            js,
            stream=RUNS_STREAM,
            durable=durable,
            subject=f"nexus.run.{run_id}.>",
            handler=wrapped,
            stop=stop,
            max_deliver=max_deliver,
            ack_wait_s=2,
        )
    )
    for _ in range(300):
        if len(seen) >= until:
            break
        await asyncio.sleep(0.05)
    # Nothing more can arrive once every message is settled (acked or terminated): nothing pending,
    # nothing waiting for an ack or a redelivery. Wait for that state, not for time.
    await _settled(js, durable, 600)
    stop.set()
    await task
    return seen


async def _dead_letters(js, subject: str) -> list[DeadLetter]:
    sub = await js.subscribe(f"nexus.dlq.{subject}", stream=DLQ_STREAM, ordered_consumer=True)
    out = []
    try:
        while True:
            msg = await sub.next_msg(timeout=1)
            out.append(msgspec.json.decode(decode_raw(msg.data).data, type=DeadLetter))
    except Exception:  # noqa: BLE001 — no more messages
        pass
    await sub.unsubscribe()
    return out


async def test_same_envelope_id_is_stored_once(js) -> None:
    run_id = f"run_{uuid.uuid4().hex}"
    pub = Publisher(js, "test")
    env = await pub.publish("run.log", RunLog(message="once"), run_id=run_id)
    await pub.publish("run.log", RunLog(message="once"), run_id=run_id, msg_id=env.id)

    async def ok(_: Delivery) -> None:
        return None

    seen = await _collect(js, run_id, ok, until=1)
    assert [d.payload.message for d in seen] == ["once"]


async def test_undecodable_message_goes_to_dead_letter_and_consumer_keeps_running(js) -> None:
    run_id = f"run_{uuid.uuid4().hex}"
    subject = f"nexus.run.{run_id}.log"
    await js.publish(subject, b"{not json")
    await Publisher(js, "test").publish("run.log", RunLog(message="after the poison"), run_id=run_id)

    async def ok(_: Delivery) -> None:
        return None

    seen = await _collect(js, run_id, ok, until=1)
    assert [d.payload.message for d in seen] == ["after the poison"]
    (letter,) = await _dead_letters(js, subject)
    assert letter.reason.startswith("undecodable") and letter.body == "{not json"


async def test_failing_handler_is_retried_then_dead_lettered(js) -> None:
    run_id = f"run_{uuid.uuid4().hex}"
    await Publisher(js, "test").publish("run.log", RunLog(message="boom"), run_id=run_id)

    async def fail(_: Delivery) -> None:
        raise RuntimeError("handler broke")

    seen = await _collect(js, run_id, fail, max_deliver=3, until=3)
    assert [d.deliveries for d in seen] == [1, 2, 3]
    (letter,) = await _dead_letters(js, f"nexus.run.{run_id}.log")
    assert "failed 3 times" in letter.reason and "handler broke" in letter.reason


async def test_poison_skips_retries(js) -> None:
    run_id = f"run_{uuid.uuid4().hex}"
    await Publisher(js, "test").publish("run.log", RunLog(message="never valid"), run_id=run_id)

    async def reject(_: Delivery) -> None:
        raise Poison("not for us")

    seen = await _collect(js, run_id, reject, until=1)
    assert len(seen) == 1
    (letter,) = await _dead_letters(js, f"nexus.run.{run_id}.log")
    assert letter.reason == "rejected: not for us"


async def test_publish_refuses_a_payload_of_the_wrong_type(js) -> None:
    with pytest.raises(TypeError):
        await Publisher(js, "test").publish("run.heartbeat", RunLog(message="x"), run_id="run_x")


async def test_partitioned_consumer_keeps_each_runs_order_and_overlaps_runs(js) -> None:
    tag = uuid.uuid4().hex[:8]
    runs = [f"run_{tag}a", f"run_{tag}b"]
    pub = Publisher(js, "test")
    for i in range(10):
        for run in runs:
            await pub.publish("run.log", RunLog(message=str(i)), run_id=run)
    seen: dict[str, list[int]] = {r: [] for r in runs}
    in_flight, overlapped = set(), []
    stop = asyncio.Event()

    async def handler(d: Delivery) -> None:
        run = d.subject.split(".")[2]
        if run not in seen:
            return  # another test's run in the same stream
        in_flight.add(run)
        overlapped.append(len(in_flight))
        await asyncio.sleep(0.01 if run.endswith("a") else 0.002)
        seen[run].append(int(d.payload.message))
        in_flight.discard(run)

    task = asyncio.create_task(
        consume(
            js,
            stream=RUNS_STREAM,
            durable=f"p-{tag}",
            subject="nexus.run.*.log",
            handler=handler,
            stop=stop,
            concurrency=4,
            partition=lambda s: s.split(".")[2],
        )
    )
    for _ in range(300):
        if sum(map(len, seen.values())) == 20:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    assert seen == {r: list(range(10)) for r in runs}
    assert max(overlapped) == 2  # the two runs were handled at the same time


async def test_prefetch_keeps_each_keys_order_and_returns_what_it_did_not_handle(js) -> None:
    """With `prefetch` the next batch is fetched while one is handled: each run's events still reach
    the handler once, in stream order across batches; and a batch fetched ahead when the loop stops
    is nak'ed, so the next consumer gets it at once (ack_wait here is far longer than the test waits)."""
    runs = [f"run_{uuid.uuid4().hex}" for _ in range(4)]
    pub = Publisher(js, "test")
    for i in range(60):
        await pub.publish("run.log", RunLog(message=str(i)), run_id=runs[i % 4])
    durable = f"t-{uuid.uuid4().hex[:8]}"
    got: list[dict[str, list[int]]] = [{r: [] for r in runs}, {r: [] for r in runs}]

    def consumer(n: int, stop: asyncio.Event, held: asyncio.Event | None) -> asyncio.Task:
        async def group(ds: list[Delivery]) -> None:
            for d in ds:
                if (run := d.subject.split(".")[2]) in got[n]:  # the stream holds other tests' runs too
                    got[n][run].append(int(d.payload.message))
            if held is not None and sum(map(len, got[n].values())) >= 24:
                held.set()
                await stop.wait()  # the loop stays here while the next batch sits fetched ahead

        async def one(d: Delivery) -> None:
            await group([d])

        return asyncio.create_task(
            consume(
                js,
                stream=RUNS_STREAM,
                durable=durable,
                subject="nexus.run.*.log",
                handler=one,
                group_handler=group,
                stop=stop,
                batch=8,
                concurrency=4,
                partition=lambda s: s.split(".")[2],
                ack_wait_s=120,
                prefetch=True,
            )
        )

    stop, held = asyncio.Event(), asyncio.Event()
    first = consumer(0, stop, held)
    await asyncio.wait_for(held.wait(), 60)
    stop.set()
    await first
    stop2 = asyncio.Event()
    second = consumer(1, stop2, None)
    try:
        await _settled(js, durable, 400)  # 20 s, far below ack_wait: only a nak brings the fetched-ahead batch back
    finally:
        stop2.set()
        await second
    for k, r in enumerate(runs):
        assert got[0][r] + got[1][r] == list(range(k, 60, 4)), (r, got)


@pytest.mark.timeout(120)
async def test_prefetch_survives_an_idle_stream(js) -> None:
    """A fetch ahead that times out on an idle stream is not awaited again: the loop keeps fetching
    (and yielding to the event loop), and a message published a while later is handled."""
    run_id = f"run_{uuid.uuid4().hex}"
    pub = Publisher(js, "test")
    handled: list[str] = []
    got = asyncio.Event()
    stop = asyncio.Event()

    async def one(d: Delivery) -> None:
        handled.append(d.payload.message)
        got.set()

    task = asyncio.create_task(
        consume(
            js,
            stream=RUNS_STREAM,
            durable=f"t-{uuid.uuid4().hex[:8]}",
            subject=f"nexus.run.{run_id}.>",
            handler=one,
            group_handler=lambda ds: asyncio.gather(*(one(d) for d in ds)),
            stop=stop,
            batch=8,
            concurrency=2,
            partition=lambda s: s.split(".")[2],
            prefetch=True,
        )
    )
    try:
        for n in range(3):  # idle fetches come and go: each ~0.5 s timeout, several in a row
            await pub.publish("run.log", RunLog(message=f"m{n}"), run_id=run_id)
            await asyncio.wait_for(got.wait(), 60)
            got.clear()
            idle = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(1.2, idle.set_result, None)  # the loop must stay free to fire this
            await idle
    finally:
        stop.set()
        await task
    assert handled == ["m0", "m1", "m2"]


# The pull consumer's per-message costs (nexus.events.pull): a fetched batch is handed over without a
# task per message; a group's acks, sent in one write, still acknowledge exactly those messages.
async def _publish_logs(js, run_id: str, n: int) -> None:
    pub = Publisher(js, "test")
    for i in range(n):
        await pub.publish("run.log", RunLog(message=f"m{i}"), run_id=run_id)


def _pull(js, durable: str, run_id: str):
    subject = f"nexus.run.{run_id}.>"
    config = pull_config(durable=durable, subject=subject, max_deliver=5, ack_wait_s=30, max_ack_pending=1000)
    return pulling(js, stream=RUNS_STREAM, subject=subject, config=config)


async def _whole_batch(sub, n: int) -> list:
    """What the server hands out may arrive over several socket reads: fetch until all n are here."""
    msgs: list = []
    for _ in range(50):
        if len(msgs) >= n:
            break
        msgs += await sub.fetch(n - len(msgs), timeout=2)
    return msgs


async def test_a_fetched_batch_is_handed_over_without_a_task_per_message(js) -> None:
    run_id = f"run_{uuid.uuid4().hex}"
    n = 300
    await _publish_logs(js, run_id, n)
    loop = asyncio.get_running_loop()
    made = 0
    default = loop.get_task_factory()

    def counting(loop_, coro, **kwargs):
        nonlocal made
        made += 1
        return default(loop_, coro, **kwargs) if default else asyncio.Task(coro, loop=loop_, **kwargs)

    async with _pull(js, f"t-{uuid.uuid4().hex[:8]}", run_id) as sub:
        await asyncio.sleep(0)
        loop.set_task_factory(counting)
        try:
            msgs = await _whole_batch(sub, n)
        finally:
            loop.set_task_factory(default)
        bodies = [m.data.decode() for m in msgs]
        assert len(msgs) == n
        assert all(f'"m{i}"' in bodies[i] for i in range(n)), "out of stream order"
        # nats-py's own next_msg makes two tasks per message (600 here); waiting messages now make none.
        assert made < n // 4, f"{made} tasks for a fetch of {n}"
        await ack_all(msgs)


async def _ack_pending(js, durable: str, want: int) -> int:
    """The durable's count of delivered-but-unacked messages once it reaches `want` (bounded wait: the
    server applies acks asynchronously), or the last count seen."""
    for _ in range(100):
        info = await js.consumer_info(RUNS_STREAM, durable)
        if info.num_ack_pending == want:
            break
        await asyncio.sleep(0.02)
    return info.num_ack_pending


async def test_one_write_acks_exactly_its_messages_with_two_instances_on_a_durable(js) -> None:
    run_id = f"run_{uuid.uuid4().hex}"
    durable = f"t-{uuid.uuid4().hex[:8]}"
    await _publish_logs(js, run_id, 40)
    async with _pull(js, durable, run_id) as first, _pull(js, durable, run_id) as second:
        a = await _whole_batch(first, 25)  # the first instance holds the older messages
        b = await _whole_batch(second, 15)  # the second the newer ones
        assert len(a) == 25 and len(b) == 15
        await ack_all(b)
        await ack_all(b)  # acked twice: nothing more is sent, nothing raised
        # Acknowledged one by one on their own subjects: the first instance's 25 are still its own
        # (an ack of the newest sequence as "all" would have taken them too).
        assert await _ack_pending(js, durable, 25) == 25
        assert all(m._ackd for m in b) and not any(m._ackd for m in a)
        await ack_all(a)
        assert await _ack_pending(js, durable, 0) == 0
        info = await js.consumer_info(RUNS_STREAM, durable)
        assert info.num_pending == 0
        assert info.ack_floor.stream_seq == info.delivered.stream_seq


async def test_a_handler_that_never_returns_is_cut_at_the_ack_wait_and_the_consumer_goes_on(js) -> None:
    """A downstream that takes a request and never answers: the handler is cut at the ack wait, its message
    comes back later, and the messages behind it are handled meanwhile (before: the loop waited for ever)."""
    run_id = f"run_{uuid.uuid4().hex[:10]}"
    pub = Publisher(js, "test")
    for i in range(3):
        await pub.publish("run.log", RunLog(message=f"m{i}"), run_id=run_id)
    handled: list[str] = []
    hung = False

    async def handler(d: Delivery) -> None:
        nonlocal hung
        if d.payload.message == "m0" and not hung:
            hung = True
            await asyncio.Event().wait()  # never answered
        handled.append(d.payload.message)

    await asyncio.wait_for(_collect(js, run_id, handler, until=4), 120)  # before: for ever
    # (those behind it waited out their own ack wait meanwhile: they may come twice, and handlers are idempotent)
    assert set(handled) == {"m0", "m1", "m2"} and handled[0] == "m1" and handled.count("m0") == 1

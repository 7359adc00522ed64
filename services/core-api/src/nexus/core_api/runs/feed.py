"""One live feed of the run-event stream per core-api process, fanned out to the run streams open in it.

A run's event stream made its own JetStream consumer (a create, flow control, heartbeats, and a consumer
left on the server for a minute after it): ~2 CPU-ms of core-api's and ~1.3 of nats-server's per stream
(docs/throughput.md, "A run's stream without a consumer of its own"). Now one push consumer on
`nexus.run.>` follows what is new, made when the first stream joins and removed a while after the last
one left; each stream gets its run's messages in a bounded queue, and reads what came before it joined
with message gets (`stream.run_stream`).

The consumer is ordered by hand, not by nats-py's ordered consumer, which restarts a consumer that has
delivered nothing yet from sequence 1 (a replay of the whole stream): a gap in the consumer's sequence,
missed heartbeats or a reconnect make it again from the sequence after the last one handed out."""

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from nexus.domain.runs import RUN_FINAL
from nexus.events.bus import forget_reconnect, on_reconnect
from nexus.events.catalog import RUNS_STREAM
from nexus.events.envelope import decode_raw

log = logging.getLogger("nexus.core_api.runs.feed")

FINAL_NAMES = frozenset(s.value for s in RUN_FINAL)
# What a stream may have waiting before it counts as too slow: it then ends with an `error` event and
# its client resumes with Last-Event-ID (nothing is lost; the feed and the other streams never wait for it).
QUEUE_MAX = 1024
HEARTBEAT_S = 5.0
# The feed's consumer is kept this long after the last stream left (a stream opens right after another
# closes under load), and removed by the server this long after core-api is gone.
IDLE_STOP_S = 10.0
INACTIVE_S = 60.0
RETRY_MAX_S = 2.0
# What the feed keeps of the newest messages, for the streams that join a run already under way: under
# load a client opens its run's stream after the run's first events, and a message get each cost
# nats-server ~0.3 ms. Every message after `kept_after` is kept, so a stream joining after it reads its
# past from here, with no request.
KEEP_MAX = 8192
KEEP_BYTES = 16 * 1024 * 1024


@dataclass(slots=True)
class FeedMsg:
    """One run event as the feed read it: `type` None for a message that is no envelope (skipped)."""

    seq: int
    subject: str
    data: bytes
    type: str | None
    final: bool = False


def feed_msg(seq: int, subject: str, data: bytes) -> FeedMsg:
    """Decoded once for every stream that follows the run; a poison message is logged and marked, not raised."""
    try:
        env = decode_raw(data)
        final = env.type == "run.status" and msgspec.json.decode(env.data).get("status") in FINAL_NAMES
    except (msgspec.DecodeError, msgspec.ValidationError, AttributeError):
        # Kept by the stream, it must not end every reader's stream, now and on every replay.
        log.warning("skipping an undecodable message on %s (stream sequence %d)", subject, seq)
        return FeedMsg(seq, subject, data, None)
    return FeedMsg(seq, subject, data, env.type, final)


@dataclass(eq=False)
class Listener:
    """A stream following one run: what the feed handed it, and from where (`after`: every message of the
    run past it comes through `queue`; those in (kept_after, after] are in `kept`; the stream reads what
    is older from the stream itself)."""

    run_id: str
    queue: asyncio.Queue[FeedMsg] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    after: int | None = None
    joined: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False
    kept_after: int = 0  # what the feed held of the run when it joined: every message in (kept_after, after]
    kept: list[tuple[int, str, bytes]] = field(default_factory=list)

    def put(self, m: FeedMsg) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(m)
        except asyncio.QueueFull:
            self.overflowed = True
            log.info("a stream of run %s fell %d events behind; it ends and its client resumes", self.run_id, QUEUE_MAX)


class RunFeed:
    def __init__(self, nc: NATS, js: JetStreamContext, stream: str = RUNS_STREAM, subject: str = "nexus.run.>") -> None:
        self.nc, self.js, self.stream, self.subject = nc, js, stream, subject
        self.listeners: dict[str, set[Listener]] = {}
        self.last_seq: int | None = None  # the last stream sequence handed out (None: no consumer made yet)
        self._cseq = 0
        self._sub: Subscription | None = None
        self._consumer: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # activity, a reset asked for, or a listener joined
        self._reset = False
        self._made = 0  # consumers made so far: a message is heard only from the newest one's inbox
        self._idle_since: float | None = None
        self._kept: deque[tuple[int, str, bytes]] = deque()
        self._kept_by_run: dict[str, deque[tuple[int, str, bytes]]] = {}
        self._kept_bytes = 0
        self.kept_after = 0

    # -- streams ---------------------------------------------------------------------------------------
    def join(self, run_id: str) -> Listener:
        listener = Listener(run_id)
        self.listeners.setdefault(run_id, set()).add(listener)
        if self.last_seq is not None and self._sub is not None:
            self._hand_over(listener)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="run-feed")
        self._idle_since = None
        return listener

    def _hand_over(self, listener: Listener) -> None:
        listener.after, listener.kept_after = self.last_seq, self.kept_after
        listener.kept = list(self._kept_by_run.get(listener.run_id, ()))
        listener.joined.set()

    def leave(self, listener: Listener) -> None:
        left = self.listeners.get(listener.run_id)
        if left is not None:
            left.discard(listener)
            if not left:
                del self.listeners[listener.run_id]
        if not self.listeners:
            self._idle_since = asyncio.get_running_loop().time()

    # -- the consumer ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        reconnected = asyncio.Event()
        on_reconnect(self.nc, reconnected)
        pause = 0.2
        try:
            while not self._idle_long():
                if self._sub is None or self._reset or reconnected.is_set():
                    reconnected.clear()
                    try:
                        await self._make()
                    except Exception as exc:  # noqa: BLE001  # no leader, no answer: the streams wait, it tries again
                        # Told once per streak, not every RETRY_MAX_S for as long as an outage lasts.
                        log.log(logging.DEBUG if pause > 0.2 else logging.WARNING, "the run feed waits: %r", exc)
                        await asyncio.sleep(pause)
                        pause = min(pause * 2, RETRY_MAX_S)
                        continue
                    if pause > 0.2:
                        log.info("the run feed follows the run events again")
                    pause = 0.2
                self._wake.clear()
                try:  # the server's heartbeats come every HEARTBEAT_S while nothing else does
                    await asyncio.wait_for(self._wake.wait(), 2 * HEARTBEAT_S)
                except TimeoutError:
                    log.warning("the run feed heard nothing for %.0f s; making its consumer again", 2 * HEARTBEAT_S)
                    self._reset = True
        finally:
            forget_reconnect(self.nc, reconnected)
            # Let go at once, before any wait: a stream joining from now on starts a feed of its own.
            gone = self._detach()
            self.last_seq, self._task = None, None
            self._kept.clear()
            self._kept_by_run.clear()
            self._kept_bytes = 0
            await self._remove(*gone)

    def _idle_long(self) -> bool:
        if self.listeners or self._idle_since is None:
            return False
        return asyncio.get_running_loop().time() - self._idle_since >= IDLE_STOP_S

    async def _make(self) -> None:
        """(Re)make the consumer from the sequence after the last one handed out, on a fresh inbox."""
        await self._remove(*self._detach())
        if self.last_seq is None:  # set before the consumer can deliver: its first messages may beat its answer
            self.last_seq = self.kept_after = (await self.js.stream_info(self.stream)).state.last_seq
        start = self.last_seq + 1
        inbox = self.nc.new_inbox()
        self._made += 1
        made = self._made

        async def on_msg(msg: Msg) -> None:
            if made == self._made:  # else a message to an inbox already given up
                await self._on_msg(msg)

        self._sub = await self.nc.subscribe(inbox, cb=on_msg, pending_msgs_limit=65536)
        config = ConsumerConfig(
            deliver_subject=inbox,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            filter_subject=self.subject,
            ack_policy=AckPolicy.NONE,
            max_deliver=1,
            flow_control=True,
            idle_heartbeat=HEARTBEAT_S,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=INACTIVE_S,
        )
        self._cseq, self._reset = 0, False
        try:
            self._consumer = (await self.js.add_consumer(self.stream, config=config)).name
        except BaseException:
            await self._remove(*self._detach())
            raise
        for listeners in self.listeners.values():  # streams that joined while it was being made
            for listener in listeners:
                if listener.after is None:
                    self._hand_over(listener)

    def _detach(self) -> tuple[Subscription | None, str | None]:
        gone = self._sub, self._consumer
        self._sub, self._consumer = None, None
        return gone

    async def _remove(self, sub: Subscription | None, consumer: str | None) -> None:
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if consumer is not None:  # else the server keeps it INACTIVE_S; never let a lost answer hold the feed
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.js.delete_consumer(self.stream, consumer), 2)

    async def _on_msg(self, msg: Msg) -> None:
        self._wake.set()
        if msg.headers and not msg.data and msg.headers.get("Status") == "100":
            await self._on_status(msg)
            return
        meta = msg.metadata
        if meta.sequence.consumer != self._cseq + 1:  # something was lost between the server and here
            self._ask_reset()
            return
        self._cseq = meta.sequence.consumer
        self.last_seq = meta.sequence.stream
        run_id = msg.subject.split(".", 3)[2]
        self._keep(run_id, (self.last_seq, msg.subject, msg.data))
        listeners = self.listeners.get(run_id)
        if listeners:
            m = feed_msg(self.last_seq, msg.subject, msg.data)
            for listener in listeners:
                if listener.after is not None and m.seq > listener.after:
                    listener.put(m)

    def _keep(self, run_id: str, kept: tuple[int, str, bytes]) -> None:
        self._kept.append(kept)
        self._kept_by_run.setdefault(run_id, deque()).append(kept)
        self._kept_bytes += len(kept[2])
        while len(self._kept) > KEEP_MAX or self._kept_bytes > KEEP_BYTES:
            seq, subject, data = self._kept.popleft()
            gone = subject.split(".", 3)[2]
            of_run = self._kept_by_run[gone]
            of_run.popleft()  # the oldest kept of the run is the oldest kept of all that are its
            if not of_run:
                del self._kept_by_run[gone]
            self._kept_bytes -= len(data)
            self.kept_after = seq

    async def _on_status(self, msg: Msg) -> None:
        if msg.reply:  # a flow control request: everything before it is handed out already
            await self.nc.publish(msg.reply)
            return
        last = msg.headers.get("Nats-Last-Consumer") if msg.headers else None
        if last is not None and int(last) != self._cseq:  # a heartbeat telling of deliveries never heard
            self._ask_reset()

    def _ask_reset(self) -> None:
        self._reset = True
        self._wake.set()

    async def close(self) -> None:
        task = self._task
        self.listeners.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

"""Waiting on core-api: approval decisions and (for meta sessions) children's ends, both replayed
from the run's own subjects, so nothing published before we listened is missed.

Each is read through a pull consumer named for this run attempt (nexus.events.permissions): the
run's NATS credential may create and pull exactly these consumers, with exactly these filters, and
no other consumer on the stream (which would let it read other runs). A kind's consumer is made when
the run first waits for that kind — a run that asks for an approval never makes the children's — and
made at once, without looking it up first: its name is this attempt's own, and creating a consumer
that exists with the same configuration returns it."""

import asyncio
import contextlib
import logging

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from nexus.events.catalog import RUNS_STREAM, run_subject
from nexus.events.envelope import decode_raw
from nexus.events.payloads import ApprovalDecided, ChildFinished
from nexus.events.permissions import RunIdentity
from nexus.events.pull import fetch_bounded

log = logging.getLogger("nexus.agent_runner.waiting")
KINDS = {"approval_decided": ApprovalDecided, "child_finished": ChildFinished}


class RunInbox:
    def __init__(self, js: JetStreamContext, who: RunIdentity) -> None:
        self.js = js
        self.who = who
        self.run_id = who.run_id
        self.decisions: dict[str, ApprovalDecided] = {}
        self.children: dict[str, ChildFinished] = {}
        # An optional async callback for each child's end (the session tree).
        self.on_child: Callable[[ChildFinished], Awaitable[None]] | None = None
        self.changed = asyncio.Condition()
        self._subs: dict[str, JetStreamContext.PullSubscription] = {}  # by kind, once listened to
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def started(self) -> bool:
        return bool(self._subs)

    async def start(self, *kinds: str) -> None:
        """Listen for `kinds` (every kind when none is named) from the first of the run's messages on
        them; a kind listened to already is left as it is."""
        for kind in kinds or tuple(KINDS):
            if kind in self._subs:
                continue
            durable = self.who.consumer(kind)
            config = ConsumerConfig(
                # Named, the create goes to CONSUMER.CREATE.<stream>.<name>.<filter>: the one the run may use.
                name=durable,
                durable_name=durable,
                filter_subject=run_subject(self.run_id, kind),
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.ALL,
                inactive_threshold=3600.0,
            )
            await self.js.add_consumer(RUNS_STREAM, config=config)
            sub = await self.js.pull_subscribe_bind(durable=durable, stream=RUNS_STREAM)
            self._subs[kind] = sub
            self._tasks.append(asyncio.create_task(self._pull(sub, KINDS[kind])))

    async def _pull(self, sub: JetStreamContext.PullSubscription, type_: type) -> None:
        while True:
            try:
                msgs = await fetch_bounded(sub, 16, timeout=5)
            except NatsTimeout:
                continue
            except asyncio.CancelledError:
                raise
            except Exception:  # a reconnect or a server restart: fetch again
                log.debug("fetch on %s failed; retrying", type_.__name__, exc_info=True)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                await self._on_msg(msg, type_)

    async def _on_msg(self, msg: Msg, type_: type) -> None:
        try:
            data: Any = msgspec.json.decode(decode_raw(msg.data).data, type=type_)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("undecodable %s on %s: %s", type_.__name__, msg.subject, exc)
            return
        async with self.changed:
            if isinstance(data, ApprovalDecided):
                self.decisions[data.approval_id] = data
            else:
                self.children[data.session_id] = data
                if self.on_child is not None:
                    await self.on_child(data)
            self.changed.notify_all()

    async def decision(self, approval_id: str, timeout_s: float) -> ApprovalDecided | None:
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(lambda: approval_id in self.decisions), timeout_s)
            return self.decisions.get(approval_id)

    async def children_done(self, session_ids: set[str], timeout_s: float) -> dict[str, ChildFinished]:
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(lambda: session_ids <= self.children.keys()), timeout_s)
            return {s: self.children[s] for s in session_ids if s in self.children}

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        for kind in self._subs:
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(RUNS_STREAM, self.who.consumer(kind))
        for sub in self._subs.values():
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

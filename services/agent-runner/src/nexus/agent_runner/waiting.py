"""Waiting on core-api: approval decisions and (for meta sessions) children's ends, both replayed
from the run's own subjects, so nothing published before we listened is missed."""

import asyncio
import contextlib

import msgspec
from nats.js import JetStreamContext

from nexus.events.catalog import RUNS_STREAM, run_subject
from nexus.events.envelope import decode_raw
from nexus.events.payloads import ApprovalDecided, ChildFinished


class RunInbox:
    def __init__(self, js: JetStreamContext, run_id: str) -> None:
        self.js = js
        self.run_id = run_id
        self.decisions: dict[str, ApprovalDecided] = {}
        self.children: dict[str, ChildFinished] = {}
        self.on_child = None  # optional async callback for each child's end (the session tree)
        self.changed = asyncio.Condition()
        self._subs: list = []

    async def start(self) -> None:
        for kind, type_ in (("approval_decided", ApprovalDecided), ("child_finished", ChildFinished)):
            async def on_msg(msg, type_=type_) -> None:
                data = msgspec.json.decode(decode_raw(msg.data).data, type=type_)
                async with self.changed:
                    if isinstance(data, ApprovalDecided):
                        self.decisions[data.approval_id] = data
                    else:
                        self.children[data.session_id] = data
                        if self.on_child is not None:
                            await self.on_child(data)
                    self.changed.notify_all()

            self._subs.append(await self.js.subscribe(run_subject(self.run_id, kind), stream=RUNS_STREAM, ordered_consumer=True, cb=on_msg))

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
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

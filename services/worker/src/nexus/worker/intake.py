"""The launch consumer. Unlike the generic `consume()`, it keeps fetching while launches wait for a
slot, so a later, higher-priority launch can overtake them: every fetched command queues a slot
request at once (by priority), and a batch is granted only after all of it is queued. The
subscription and the fetch loop are the events library's (`pulling`, `fetched`)."""

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from nexus.events.catalog import CMDS_STREAM
from nexus.events.consumer import UNDECODABLE, decode_message, fetched, pull_config, pulling, reject, remaking, settle
from nexus.events.payloads import LaunchRun
from nexus.events.tracing import processing
from nexus.worker.launcher import Launcher
from nexus.worker.slots import Ticket

log = logging.getLogger("nexus.worker.intake")
DURABLE = "worker-launch"
SUBJECT = "nexus.cmd.worker.launch_run"


class LaunchIntake:
    def __init__(
        self,
        js: JetStreamContext,
        launcher: Launcher,
        *,
        backlog: int = 256,
        ack_wait_s: float = 10.0,
        max_deliver: int = 5,
    ) -> None:
        self.js = js
        self.launcher = launcher
        self.backlog = backlog
        self.ack_wait_s = ack_wait_s
        self.max_deliver = max_deliver
        self.inflight: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        # In memory: the commands stream is a work queue (what was acknowledged is gone from it), so a durable
        # lost with a server restart is made anew here and gets exactly the launches nobody acknowledged;
        # nats-server no longer rewrites a state file for every launch delivered and acknowledged.
        config = pull_config(
            durable=DURABLE,
            subject=SUBJECT,
            max_deliver=self.max_deliver,
            ack_wait_s=self.ack_wait_s,
            max_ack_pending=max(self.backlog * 4, 1000),
            memory=True,
        )
        try:
            async with pulling(self.js, stream=CMDS_STREAM, subject=SUBJECT, config=config) as sub:
                remake = remaking(self.js, CMDS_STREAM, config)
                async for msgs in fetched(sub, DURABLE, stop, self._room, remake=remake):
                    for m in msgs:
                        try:
                            await self._accept(m)
                        except Exception:  # one message never ends the intake; it is redelivered
                            log.exception("accepting %s failed", m.subject)
                    self.launcher.slots.grant()
                    # A full backlog fetches nothing more until a launch is through.
                    while len(self.inflight) >= self.backlog and not stop.is_set():
                        await asyncio.wait(self.inflight, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in list(self.inflight):
                t.cancel()
            await asyncio.gather(*self.inflight, return_exceptions=True)

    def _room(self) -> int:
        return max(1, min(self.backlog - len(self.inflight), 64))

    async def _accept(self, m: Msg) -> None:
        meta = m.metadata
        deliveries = meta.num_delivered if meta else 1
        stored_at = meta.timestamp.timestamp() if meta and meta.timestamp else None
        try:
            _, cmd = decode_message(m)
            if not isinstance(cmd, LaunchRun):
                raise ValueError(f"{type(cmd).__name__} on {m.subject}")
        except UNDECODABLE as exc:
            await reject(self.js, m, DURABLE, f"undecodable: {exc}", deliveries)
            return
        ticket = self.launcher.slots.request(cmd.config.agent_id, cmd.priority)
        task = asyncio.create_task(self._handle(m, cmd, ticket, deliveries, stored_at))
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    async def _handle(
        self, m: Msg, cmd: LaunchRun, ticket: Ticket, deliveries: int, stored_at: float | None = None
    ) -> None:
        # The ack wait is short so a dead worker's launches come back quickly; a live one says it is still on it.
        ticker = asyncio.create_task(self._in_progress(m))
        try:
            with processing(
                m.subject,
                m.headers,
                consumer=DURABLE,
                msg_id=(m.headers or {}).get("Nats-Msg-Id"),
                correlation_id=cmd.run_id,
                size=len(m.data),
                deliveries=deliveries,
            ):
                await asyncio.wait({ticket.granted})  # (waiting does not cancel the grant if we are cancelled)
                await self.launcher.launch(cmd, ticket, stored_at=stored_at, deliveries=deliveries)
        except asyncio.CancelledError:
            self.launcher.slots.release(ticket)  # shutting down: the message is redelivered to someone else
            raise
        except Exception as exc:  # noqa: BLE001 — retried with backoff, then dead-lettered
            self.launcher.slots.release(ticket)
            await settle(self.js, m, DURABLE, deliveries, self.max_deliver, exc)
        else:
            await settle(self.js, m, DURABLE, deliveries, self.max_deliver, None)
        finally:
            ticker.cancel()

    async def _in_progress(self, m: Msg) -> None:
        while True:
            await asyncio.sleep(self.ack_wait_s / 3)
            with contextlib.suppress(Exception):
                await m.in_progress()

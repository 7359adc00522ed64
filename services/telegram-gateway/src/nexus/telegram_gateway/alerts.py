"""Alerts to subscribed chats, as FastStream subscribers on durable JetStream consumers: an approval
requested (with Approve / Reject / Details), its decision (the alert is edited to say who and when),
a run failed, a goal's progress and its end, a budget exceeded. Each alert goes through the outbox."""

import asyncio
import contextlib
import html
import logging

from faststream.nats import NatsBroker

from nexus.events.catalog import EVENTS_STREAM
from nexus.events.consumer import Delivery, Handler, Poison
from nexus.events.envelope import utcnow_iso
from nexus.events.faststream import durable_subscriber
from nexus.telegram_gateway import render
from nexus.telegram_gateway.core import CoreClient, CoreError
from nexus.telegram_gateway.outbox import Outbox, Outgoing, key_part
from nexus.telegram_gateway.store import ChatStore
from nexus.telegram_gateway.text import bold, code, esc, pack

log = logging.getLogger("nexus.telegram_gateway.alerts")
RUN_ENDS = ("run.failed", "run.timed_out")


# A goal's moves that end it (planning and in_progress are progress, not alerts).
GOAL_ENDS = {"done": "🏁 Goal done", "failed": "🔥 Goal failed", "cancelled": "⏹ Goal cancelled"}


# How many more times an alert asks core-api again after an answer that is no, before the event is poison.
NO_ANSWER_TRIES = 3
# The longest one try of an alert may take (its queries and bucket writes each have a timeout; this bounds
# them all, and anything else a try waits on), inside the ack wait: a try past it is cut and made again, like
# an outage. A try cut half-way loses nothing: what it queued stays queued, and the next try adds the rest.
TRY_S = 25.0


class Alerts:
    def __init__(
        self,
        core: CoreClient,
        store: ChatStore,
        outbox: Outbox | None,
        link_base: str | None = None,
        *,
        stop: asyncio.Event | None = None,
        wait_s: float = 1.0,
        try_s: float = TRY_S,
    ) -> None:
        self.core, self.store, self.outbox = core, store, outbox  # no outbox: Telegram is off, events are only followed
        self.link_base = link_base.rstrip("/") if link_base else None
        self.stop = stop or asyncio.Event()
        self.wait_s = wait_s
        self.try_s = try_s

    def register(self, broker: NatsBroker) -> None:
        for durable, subject, handler in (
            ("telegram-gw-approvals", "nexus.evt.approval.>", self.on_approval),
            ("telegram-gw-runs", "nexus.evt.run.>", self.on_run),
            ("telegram-gw-goals", "nexus.evt.goal.>", self.on_goal),
            ("telegram-gw-tasks", "nexus.evt.task.created", self.on_task_created),
        ):
            durable_subscriber(
                broker, subject=subject, stream=EVENTS_STREAM, durable=durable, deliver_new=True, holds=True
            )(self._patiently(handler))

    def _patiently(self, handler: Handler) -> Handler:
        """core-api out of reach (restarting, the bus electing a leader) is an outage, not a bad event: the
        alert waits for it — the message held, said in progress — and is never dead-lettered for it.
        (Five quick deliveries were over before a restarted core-api answered: the alert was lost.)
        A try that hangs (a call that never returns) is cut at `try_s` and made again."""

        async def patient(d: Delivery) -> None:
            noes = 0
            while True:
                try:
                    async with asyncio.timeout(self.try_s):  # idempotent: a try cut half-way is made again
                        await handler(d)
                    return
                except TimeoutError:
                    if self.stop.is_set():
                        raise
                    log.warning("a try of %s took longer than %gs; holding it", d.subject, self.try_s)
                except CoreError as exc:
                    if self.stop.is_set():
                        raise  # redelivered after the restart
                    if not exc.unreachable:
                        # An answer that is no (no such run or approval): asked again a few times, in case
                        # the read lagged the event, then poison — a forged or stale event, nothing to alert.
                        noes += 1
                        if noes > NO_ANSWER_TRIES:
                            raise Poison(f"core-api answered: {exc}") from exc
                    else:
                        log.warning("core-api not reachable (%s); holding %s", exc, d.subject)
                if d.msg is not None:
                    with contextlib.suppress(Exception):
                        await d.msg.in_progress()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), self.wait_s)

        return patient

    async def _send(self, d: Delivery, chats: list[int], blocks: list[str], approval_id: str | None = None) -> None:
        if self.outbox is None:
            log.info("%s (Telegram is off)", d.envelope.type)
            return
        event = key_part(d.envelope.id)
        if not chats or await self.store.marked(f"seen.{event}"):  # a redelivery alerts nobody twice
            return
        # Queued under keys named after the event, so a redelivery after a crash half-way queues only what
        # is missing; the event is marked seen once all of it is queued (a crash before loses nothing).
        messages = pack(blocks)
        for chat in chats:
            for i, text in enumerate(messages):
                last = i == len(messages) - 1
                msg = Outgoing(chat_id=chat, text=text, approval_id=approval_id if last else None)
                await self.outbox.put(msg, ident=f"{event}-{i:03d}")
        await self.store.claim(f"seen.{event}")

    async def on_approval(self, d: Delivery) -> None:
        ev = d.payload
        if d.envelope.type == "approval.requested":
            a = await self.core.query("approval", id=ev.approval_id)
            await self._send(
                d, await self.store.chats_for(a.get("goal_id")), render.approval_blocks(a), approval_id=ev.approval_id
            )
        elif d.envelope.type == "approval.decided" and self.outbox is not None:
            line = render.decision_line(ev.decision, ev.decided_by, d.envelope.occurred_at or utcnow_iso(), ev.reason)
            # Recorded first, read second (and the sender does the reverse): an alert still in the outbox
            # when the decision comes is edited by the sender right after it is posted.
            await self.store.set_decided(ev.approval_id, line)
            for posted in await self.store.posted(ev.approval_id):
                await self.outbox.put(
                    Outgoing(
                        chat_id=posted.chat_id,
                        text=render.decided_text(posted.text, line),
                        edit_message_id=posted.message_id,
                    )
                )

    async def on_run(self, d: Delivery) -> None:
        ev = d.payload
        if d.envelope.type not in (*RUN_ENDS, "run.succeeded"):
            return
        run = await self.core.query("status", id=ev.run_id)
        if d.envelope.type == "run.succeeded":  # progress, for the goal's followers only
            if run.get("goal_id"):
                await self._send(
                    d,
                    await self.store.followers(run["goal_id"]),
                    [
                        f"✔️ Run {code(ev.run_id)} of goal {code(run['goal_id'])} succeeded"
                        + (f": {esc(run['summary'])}" if run.get("summary") else "")
                    ],
                )
            return
        blocks = [
            f"🔥 {bold('Run ' + ev.status.replace('_', ' '))} {code(ev.run_id)}",
            f"Reason: {esc(ev.reason or '-')}",
            f"Task {code(ev.task_id)} · agent {code(ev.agent_id)} · /status {esc(ev.run_id)}",
            *render.events_blocks(run.get("last_events", [])),
        ]
        if self.link_base:
            blocks.append(f'<a href="{html.escape(f"{self.link_base}/runs/{ev.run_id}")}">Open the run</a>')
        await self._send(d, await self.store.chats_for(run.get("goal_id")), blocks)

    async def on_goal(self, d: Delivery) -> None:
        ev = d.payload
        if d.envelope.type == "goal.status_changed" and ev.status in GOAL_ENDS:
            report = await self.core.query("status", id=ev.goal_id)
            mark = GOAL_ENDS[ev.status]
            blocks = [
                f"{bold(mark)} {code(ev.goal_id)} {esc(ev.title)}",
                f"Summary: {esc(ev.summary or '-')}",
                f"Cost: {render.money(report.get('cost_usd'))}",
            ]
            blocks += [
                f"• {code(r['branch'])} {code(r['commit_sha'][:12])} {esc(r['summary'])}"
                for r in report.get("runs", [])
                if r.get("branch")
            ]
            await self._send(d, await self.store.chats_for(ev.goal_id), blocks)
        elif d.envelope.type == "goal.budget_exceeded":
            goal_id = getattr(ev, "goal_id", "")
            detail = getattr(ev, "reason", "") or getattr(ev, "summary", "")
            await self._send(
                d,
                await self.store.chats_for(goal_id),
                [f"💸 {bold('Budget exceeded')} goal {code(goal_id)} {esc(getattr(ev, 'title', ''))}", esc(detail)],
            )

    async def on_task_created(self, d: Delivery) -> None:
        ev = d.payload
        if not ev.goal_id:
            return
        await self._send(
            d,
            await self.store.followers(ev.goal_id),
            [f"🧩 Planned for goal {code(ev.goal_id)}: {esc(ev.title)} ({code(ev.task_id)})"],
        )

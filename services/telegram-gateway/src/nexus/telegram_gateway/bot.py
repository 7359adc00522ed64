"""The bot: python-telegram-bot's Application, its commands and the approval buttons. Every update is
first matched to a bound identity (core-api's bindings); reads go to core-api as queries, acts as
commands that carry the chat principal, which core-api checks again."""

import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime

from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest
from telegram.ext import (
    AIORateLimiter,
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from nexus.domain.ids import new_id
from nexus.events.payloads import CancelRunRequest, CreateGoal, DecideApproval
from nexus.observability.tracing import span, tracer
from nexus.telegram_gateway import render
from nexus.telegram_gateway.access import UPDATES, Caller, identify, refuse_once
from nexus.telegram_gateway.core import CoreClient, CoreError
from nexus.telegram_gateway.outbox import Outbox, Outgoing
from nexus.telegram_gateway.settings import TelegramSettings
from nexus.telegram_gateway.store import ChatStore, PostedAlert
from nexus.telegram_gateway.text import as_plain, bold, code, esc, pack

log = logging.getLogger("nexus.telegram_gateway.bot")
TRACER = tracer("nexus.telegram_gateway")
Command = Callable[[Update, Caller, list[str]], Awaitable[None]]
DECISIONS = {"a": "approved", "r": "rejected"}
FAILED = "⚠️ Something went wrong on our side; nothing was changed by this message. Try again in a moment."


def parse_goal(text: str) -> tuple[str, str | None, str | None]:
    """`<title> [in <repository>] [with <planner agent>]`, the two tails in either order."""
    repo = agent = None
    while True:
        m = re.search(r"\s+(in|with)\s+(\S+)\s*$", text)
        if not m or (m.group(1) == "in" and repo) or (m.group(1) == "with" and agent):
            break
        if m.group(1) == "in":
            repo = m.group(2)
        else:
            agent = m.group(2)
        text = text[: m.start()]
    return text.strip(), repo, agent


def keyboard(approval_id: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Approve", callback_data=f"d:a:{approval_id}"),
                InlineKeyboardButton("Reject", callback_data=f"d:r:{approval_id}"),
                InlineKeyboardButton("Details", callback_data=f"d:i:{approval_id}"),
            ]
        ]
    )


class NotForAnotherBot(filters.MessageFilter):
    """In a group, `/goals@other_bot` is another bot's business: no answer from this one."""

    def filter(self, message: Message) -> bool:
        first = (message.text or "").split(maxsplit=1)[0] if (message.text or "").strip() else ""
        _, at, name = first.partition("@")
        return not at or name.lower() == (message.get_bot().username or "").lower()


class Bot:
    def __init__(self, settings: TelegramSettings, core: CoreClient, store: ChatStore) -> None:
        self.settings, self.core, self.store = settings, core, store
        self.outbox: Outbox | None = None  # set once the outbox (which sends through this bot) exists
        assert settings.telegram_token
        self.app = (
            Application.builder()
            .token(settings.telegram_token)
            .base_url(settings.telegram_api_url)
            .rate_limiter(AIORateLimiter(max_retries=3))
            .concurrent_updates(8)
            .build()
        )
        commands: dict[str, Command] = {
            "start": self.cmd_help,
            "help": self.cmd_help,
            "goal": self.cmd_goal,
            "goals": self.cmd_goals,
            "status": self.cmd_status,
            "runs": self.cmd_runs,
            "approvals": self.cmd_approvals,
            "approve": self.cmd_approve,
            "reject": self.cmd_reject,
            "cancel": self.cmd_cancel,
            "agents": self.cmd_agents,
            "subscribe": self.cmd_subscribe,
            "unsubscribe": self.cmd_unsubscribe,
        }
        # New messages only: editing an old `/goal` must not create a second goal.
        for name, fn in commands.items():
            self.app.add_handler(CommandHandler(name, self._guarded(fn), filters=filters.UpdateType.MESSAGE))
        self.app.add_handler(CallbackQueryHandler(self.on_button, pattern=r"^d:[ari]:"))
        self.app.add_handler(CallbackQueryHandler(self.on_stale_button))  # no button of ours says anything else
        # Anything else said to the bot privately, or an unknown command in a group, gets a pointer to /help.
        self.app.add_handler(
            MessageHandler(
                filters.UpdateType.MESSAGE & (filters.ChatType.PRIVATE | filters.COMMAND) & NotForAnotherBot(),
                self._guarded(self.cmd_unknown),
            )
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        s = self.settings
        await self.app.initialize()
        await self.app.bot.set_my_commands([BotCommand(name, text[:256]) for name, text in render.HELP])
        await self.app.start()
        updater = self.app.updater
        if updater is None:
            raise RuntimeError("the bot application was built without an updater")
        if s.telegram_mode == "webhook":
            await updater.start_webhook(
                listen=s.telegram_webhook_listen,
                port=s.telegram_webhook_port,
                url_path=s.telegram_webhook_path,
                secret_token=s.telegram_webhook_secret,
                webhook_url=s.telegram_webhook_url,
            )
        else:
            await updater.start_polling(timeout=s.telegram_poll_timeout_s, drop_pending_updates=False)
        log.info("Telegram on (%s)", s.telegram_mode)

    async def stop(self) -> None:
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    # ------------------------------------------------------------------ sending
    async def deliver(self, msg: Outgoing) -> int | None:
        """The outbox's way out: send (or edit) one message; the id of the message a send made."""
        markup = keyboard(msg.approval_id) if msg.approval_id else None
        if msg.edit_message_id is not None:
            try:
                await self.app.bot.edit_message_text(
                    msg.text,
                    chat_id=msg.chat_id,
                    message_id=msg.edit_message_id,
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup,
                )
            except BadRequest as exc:
                if "not modified" not in str(exc).lower():  # already says this: done
                    raise
            return None
        try:
            sent = await self.app.bot.send_message(
                msg.chat_id, msg.text, parse_mode=ParseMode.HTML, reply_markup=markup
            )
        except BadRequest as exc:
            if "parse entities" not in str(exc).lower():
                raise
            # Our markup is always escaped; should Telegram still refuse it, the words arrive unformatted.
            log.warning("chat %s: Telegram refused the message's formatting (%s); sent as plain text", msg.chat_id, exc)
            sent = await self.app.bot.send_message(msg.chat_id, as_plain(msg.text), reply_markup=markup)
        return sent.message_id

    async def posted(self, msg: Outgoing, message_id: int) -> None:
        """An approval alert is known sent: remember where (for the decision's edit), and edit it now if it
        was decided while it waited in the outbox. Made again after a restart: both steps are idempotent."""
        assert msg.approval_id is not None
        await self.store.add_posted(
            msg.approval_id, PostedAlert(chat_id=msg.chat_id, message_id=message_id, text=msg.text)
        )
        if line := await self.store.decided(msg.approval_id):
            try:
                await self.app.bot.edit_message_text(
                    render.decided_text(msg.text, line),
                    chat_id=msg.chat_id,
                    message_id=message_id,
                    parse_mode=ParseMode.HTML,
                )
            except BadRequest as exc:
                if "not modified" not in str(exc).lower():  # edited already (before a restart): done
                    raise

    async def reply(self, update: Update, blocks: list[str]) -> None:
        """Replies go through the outbox too: in order per chat, and a send that fails is not lost."""
        chat = update.effective_chat
        assert chat is not None and self.outbox is not None
        for text in pack(blocks):
            await self.outbox.put(Outgoing(chat_id=chat.id, text=text))

    # ------------------------------------------------------------------ access
    def _guarded(self, fn: Command) -> Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[None, None, None]]:
        async def handler(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
            text = update.effective_message.text if update.effective_message else ""
            args = (text or "").split()[1:]
            # The root of the trace of whatever the command starts (a goal, its runs); the arguments stay out.
            command = fn.__name__.removeprefix("cmd_")
            with span(TRACER, f"chat command {command}", attributes={"nexus.chat.command": command}):
                try:
                    caller = await identify(self.core, update)
                    if caller is None:
                        await refuse_once(self.store, update)
                        return
                    await fn(update, caller, args)
                except CoreError as exc:
                    await self.reply(update, [f"⚠️ {esc(exc)}"])
                except Exception:  # the user hears that it failed; the cause goes to the log
                    log.exception("chat command %s failed", command)
                    UPDATES.labels("failed").inc()
                    await self._say_failed(update)
                    return
            UPDATES.labels("handled").inc()

        return handler

    async def _say_failed(self, update: Update) -> None:
        """Straight to Telegram, not through the outbox: what failed may be the bus the outbox stands on."""
        try:
            if update.callback_query is not None:
                await update.callback_query.answer(FAILED[:200], show_alert=True)
            elif update.effective_chat is not None:
                await update.effective_chat.send_message(FAILED)
        except Exception:  # Telegram unreachable too: the log has the first failure
            log.warning("could not tell chat that its update failed", exc_info=True)

    async def _lead_only(self, update: Update, caller: Caller, what: str) -> bool:
        if caller.is_lead:
            return True
        await self.reply(update, [f"{bold(caller.identity)} is a viewer: viewers can read but not {esc(what)}."])
        return False

    # ------------------------------------------------------------------ commands
    async def cmd_help(self, update: Update, caller: Caller, args: list[str]) -> None:
        await self.reply(update, render.help_blocks(caller.identity, caller.role))

    async def cmd_unknown(self, update: Update, caller: Caller, args: list[str]) -> None:
        await self.reply(update, ["I did not understand that. /help lists what I can do."])

    async def cmd_goal(self, update: Update, caller: Caller, args: list[str]) -> None:
        if not await self._lead_only(update, caller, "create goals"):
            return
        title, repo, agent = parse_goal(" ".join(args))
        title = title[:500].strip()  # a goal's title is short; the chat says what was kept
        if not title:
            await self.reply(update, ["Usage: /goal &lt;text&gt; [in &lt;repository&gt;] [with &lt;planner agent&gt;]"])
            return
        agent = agent or self.settings.telegram_default_planner
        repo = repo or self.settings.telegram_default_repository
        await self.core.query("resolve_goal_refs", caller.principal, meta_agent=agent, repository=repo or "")
        goal_id = new_id("goal")
        await self.core.command(
            "core.create_goal",
            CreateGoal(
                title=title,
                requested_by=caller.identity,
                goal_id=goal_id,
                meta_agent=agent,
                repository=repo or "",
                principal=caller.principal,
            ),
            correlation_id=goal_id,
        )
        assert update.effective_chat is not None
        await self.store.subscribe(update.effective_chat.id, goal_id)
        where = f" in {code(repo)}" if repo else ""
        await self.reply(
            update,
            [
                f"🎯 Goal {code(goal_id)} created: {esc(title)}",
                f"{code(agent)} plans it into tasks{where}; progress and the result come here.",
            ],
        )

    async def cmd_goals(self, update: Update, caller: Caller, args: list[str]) -> None:
        goals = await self.core.query("goals", caller.principal)
        await self.reply(update, [bold("Goals"), *[render.goal_line(g) for g in goals]] if goals else ["No goals yet."])

    async def cmd_status(self, update: Update, caller: Caller, args: list[str]) -> None:
        s = await self.core.query("status", caller.principal, id=args[0] if args else "")
        await self.reply(update, render.status_blocks(s))

    async def cmd_runs(self, update: Update, caller: Caller, args: list[str]) -> None:
        r = await self.core.query("runs", caller.principal)
        blocks = [
            bold("Active runs"),
            *([render.run_line(x) for x in r["active"]] or ["none"]),
            bold("Recent runs"),
            *([render.run_line(x) for x in r["recent"]] or ["none"]),
        ]
        await self.reply(update, blocks)

    async def cmd_approvals(self, update: Update, caller: Caller, args: list[str]) -> None:
        items = await self.core.query("approvals", caller.principal)
        await self.reply(
            update,
            [bold("Waiting approvals"), *[render.approval_line(a) for a in items]]
            if items
            else ["No approval is waiting."],
        )

    async def cmd_approve(self, update: Update, caller: Caller, args: list[str]) -> None:
        await self._decide_command(update, caller, args, "approved")

    async def cmd_reject(self, update: Update, caller: Caller, args: list[str]) -> None:
        await self._decide_command(update, caller, args, "rejected")

    async def _decide_command(self, update: Update, caller: Caller, args: list[str], decision: str) -> None:
        if not args:
            await self.reply(
                update,
                [f"Usage: /{decision[:-1] if decision == 'approved' else 'reject'} &lt;approval id&gt; [reason]"],
            )
            return
        await self.reply(update, [esc(await self.decide(caller, args[0], decision, " ".join(args[1:])))])

    async def cmd_cancel(self, update: Update, caller: Caller, args: list[str]) -> None:
        if not await self._lead_only(update, caller, "cancel runs"):
            return
        if not args:
            await self.reply(update, ["Usage: /cancel &lt;run id&gt;"])
            return
        s = await self.core.query("status", caller.principal, id=args[0])
        if s.get("kind") != "run":
            await self.reply(update, [f"{code(args[0])} is not a run."])
            return
        await self.core.command(
            "core.cancel_run", CancelRunRequest(run_id=args[0], principal=caller.principal), correlation_id=args[0]
        )
        await self.reply(update, [f"Cancelling run {code(args[0])}…"])

    async def cmd_agents(self, update: Update, caller: Caller, args: list[str]) -> None:
        agents = await self.core.query("agents", caller.principal)
        await self.reply(
            update,
            [bold("Agents"), *[f"{code(a['name'])} {esc(a['description'])}" for a in agents]]
            if agents
            else ["No agents yet."],
        )

    async def cmd_subscribe(self, update: Update, caller: Caller, args: list[str]) -> None:
        if not args:
            await self.reply(update, ["Usage: /subscribe &lt;goal id|all&gt;"])
            return
        assert update.effective_chat is not None
        goal = None if args[0] == "all" else args[0]
        if goal is not None:
            s = await self.core.query("status", caller.principal, id=goal)
            if s.get("kind") != "goal":
                await self.reply(update, [f"{code(goal)} is not a goal."])
                return
        await self.store.subscribe(update.effective_chat.id, goal)
        await self.reply(update, ["Subscribed to " + ("everything" if goal is None else f"goal {code(goal)}") + "."])

    async def cmd_unsubscribe(self, update: Update, caller: Caller, args: list[str]) -> None:
        assert update.effective_chat is not None
        goal = args[0] if args and args[0] != "all" else None
        await self.store.unsubscribe(update.effective_chat.id, goal)
        await self.reply(update, ["Unsubscribed" + (f" from goal {code(goal)}." if goal else " from all alerts.")])

    # ------------------------------------------------------------------ decisions
    async def decide(self, caller: Caller, approval_id: str, decision: str, reason: str) -> str:
        """Send a decision once; say why not when it cannot change anything."""
        if not caller.is_lead:
            return f"{caller.identity} is a viewer: viewers can read but not decide approvals."
        a = await self.core.query("approval", caller.principal, id=approval_id)
        if a["status"] != "pending":
            by = f" by {a['decided_by']}" if a["decided_by"] and a["status"] != "expired" else ""
            return f"Nothing changed: this approval is already {a['status']}{by} ({a['decided_at']})."
        if a.get("expires_at") and datetime.fromisoformat(a["expires_at"].replace("Z", "+00:00")) <= datetime.now(UTC):
            return f"Nothing changed: this approval expired at {a['expires_at']}."
        if not await self.store.claim(f"decision.{approval_id}"):
            return "Nothing changed: a decision on this approval is already on its way."
        try:
            await self.core.command(
                "core.decide_approval",
                DecideApproval(
                    approval_id=approval_id,
                    decision=decision,  # type: ignore[arg-type]  # a button's or command's own word
                    reason=reason[:2000],
                    decided_by=caller.identity,
                    principal=caller.principal,
                ),
                correlation_id=a["run_id"],
            )
        except BaseException:  # not sent: the next press may try again
            await self.store.release(f"decision.{approval_id}")
            raise
        return f"{'Approving' if decision == 'approved' else 'Rejecting'} {approval_id}…"

    async def on_stale_button(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        """A button this bot does not know (an old keyboard, or forged data): answered, so it stops spinning."""
        if update.callback_query is not None:
            await update.callback_query.answer("This button does nothing any more.", show_alert=True)
        UPDATES.labels("ignored").inc()

    async def on_button(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.data
        kind, approval_id = query.data.split(":", 2)[1:]
        try:
            caller = await identify(self.core, update)
            if caller is None:
                await refuse_once(self.store, update)
                return
            if kind == "i":
                a = await self.core.query("approval", caller.principal, id=approval_id)
                await query.answer()
                await self.reply(update, render.approval_blocks(a) + [f"Status: {bold(a['status'])}"])
                return
            said = await self.decide(caller, approval_id, DECISIONS[kind], "decided with a button in Telegram")
            await query.answer(said[:200], show_alert=True)  # Telegram's limit for a button's answer
        except CoreError as exc:
            await query.answer(str(exc)[:200], show_alert=True)
        except Exception:  # the user hears that it failed; the cause goes to the log
            log.exception("button %s failed", kind)
            UPDATES.labels("failed").inc()
            await self._say_failed(update)

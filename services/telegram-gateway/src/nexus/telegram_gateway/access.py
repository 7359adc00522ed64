"""Who is talking: a chat user is a lead, a viewer, or unknown (refused once, then ignored)."""

import msgspec
from prometheus_client import Counter
from telegram import Update

from nexus.events.payloads import ChatPrincipal
from nexus.telegram_gateway.core import CoreClient
from nexus.telegram_gateway.store import ChatStore

UPDATES = Counter("nexus_telegram_updates_total", "Chat updates by outcome", ["outcome"])
REFUSAL = "You are not allowed to use this bot. Ask a Nexus admin to bind your Telegram user id ({user_id})."


class Caller(msgspec.Struct, kw_only=True):
    principal: ChatPrincipal
    identity: str
    role: str

    @property
    def is_lead(self) -> bool:
        return self.role == "lead"


def principal_of(update: Update) -> ChatPrincipal | None:
    user = update.effective_user
    if user is None:
        return None
    return ChatPrincipal(user_id=str(user.id), username=user.username or "")


async def identify(core: CoreClient, update: Update) -> Caller | None:
    principal = principal_of(update)
    if principal is None:
        return None
    bound = await core.query("whoami", principal)
    if not bound:
        return None
    return Caller(principal=principal, identity=bound["identity"], role=bound["role"])


async def refuse_once(store: ChatStore, update: Update) -> None:
    """An unknown user hears one refusal, ever; after that the bot stays silent for them."""
    user = update.effective_user
    if user is None:
        return
    if update.callback_query is not None:  # a button in a group: told to the presser alone, not to the group
        await update.callback_query.answer(REFUSAL.format(user_id=user.id), show_alert=True)
        UPDATES.labels("refused").inc()
        return
    if await store.claim(f"refused.{user.id}") and update.effective_chat is not None:
        await update.effective_chat.send_message(REFUSAL.format(user_id=user.id))
        UPDATES.labels("refused").inc()
    else:
        UPDATES.labels("ignored").inc()

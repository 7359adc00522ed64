"""What the gateway owns, kept in a JetStream key-value bucket so a restart loses nothing: chat
subscriptions, where each approval alert was posted, decisions on their way, users already refused."""

from collections.abc import Callable
from typing import TypeVar

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

T = TypeVar("T")
BUCKET = "nexus_chat"  # subscriptions and refused users: kept
MARKS_BUCKET = "nexus_chat_marks"  # alerts posted, decisions sent, events seen: forgotten after a week
MARKS_TTL_S = 7 * 86400
# Every chat's subscription in one entry: an alert reads who to tell in one consistent read. (One entry a chat,
# listed key by key, could miss a chat whose entry was being rewritten while the list was taken.)
SUBSCRIPTIONS = "subscriptions"


class Subscription(msgspec.Struct, kw_only=True):
    all: bool = False
    goals: list[str] = msgspec.field(default_factory=list)


class PostedAlert(msgspec.Struct, kw_only=True):
    chat_id: int
    message_id: int
    text: str


async def open_bucket(js: JetStreamContext, name: str, ttl_s: float | None = None) -> KeyValue:
    try:
        return await js.key_value(name)
    except Exception:  # noqa: BLE001 — not there yet (or another gateway is creating it)
        return await js.create_key_value(bucket=name, history=1, ttl=ttl_s)


async def exists(kv: KeyValue, key: str) -> bool:
    try:
        await kv.get(key)
    except KeyNotFoundError:
        return False
    return True


class ChatStore:
    def __init__(self, kv: KeyValue, marks: KeyValue) -> None:
        self.kv, self.marks = kv, marks

    @classmethod
    async def open(cls, js: JetStreamContext) -> "ChatStore":
        store = cls(await open_bucket(js, BUCKET), await open_bucket(js, MARKS_BUCKET, MARKS_TTL_S))
        await store.fold_chat_entries()
        return store

    def _bucket(self, key: str) -> KeyValue:
        return self.kv if key.startswith(("sub.", "refused.", SUBSCRIPTIONS)) else self.marks

    async def _get(self, key: str, type_: type[T]) -> T | None:
        try:
            entry = await self._bucket(key).get(key)
        except KeyNotFoundError:
            return None
        return msgspec.json.decode(entry.value, type=type_) if entry.value else None

    async def _put(self, key: str, value: object) -> None:
        await self._bucket(key).put(key, msgspec.json.encode(value))

    async def _change(self, key: str, type_: type[T], change: Callable[[T | None], T]) -> T:
        """Read, change and write back the entry under `key`, made again if another writer came between:
        two changes at once (two chats posting the same alert, two commands) both take effect."""
        kv = self._bucket(key)
        while True:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                entry = None
            old = msgspec.json.decode(entry.value, type=type_) if entry is not None and entry.value else None
            new = change(old)
            try:
                if entry is None:
                    await kv.create(key, msgspec.json.encode(new))
                else:
                    await kv.update(key, msgspec.json.encode(new), last=entry.revision)
                return new
            except KeyWrongLastSequenceError:
                continue

    async def claim(self, key: str) -> bool:
        """True for the first caller only (across restarts and gateway replicas)."""
        try:
            await self._bucket(key).create(key, b"1")
            return True
        except KeyWrongLastSequenceError:
            return False

    async def marked(self, key: str) -> bool:
        """Whether `key` was claimed."""
        return await exists(self._bucket(key), key)

    async def release(self, key: str) -> None:
        """Undo a claim whose work did not happen, so that it can be claimed again."""
        await self._bucket(key).delete(key)

    # subscriptions
    async def subscriptions(self) -> dict[int, Subscription]:
        return await self._get(SUBSCRIPTIONS, dict[int, Subscription]) or {}

    async def subscription(self, chat_id: int) -> Subscription:
        return (await self.subscriptions()).get(chat_id) or Subscription()

    async def _change_chat(self, chat_id: int, change: Callable[[Subscription], Subscription]) -> Subscription:
        def apply(subs: dict[int, Subscription] | None) -> dict[int, Subscription]:
            subs = dict(subs or {})
            sub = change(subs.get(chat_id) or Subscription())
            if sub.all or sub.goals:
                subs[chat_id] = sub
            else:
                subs.pop(chat_id, None)
            return subs

        return (await self._change(SUBSCRIPTIONS, dict[int, Subscription], apply)).get(chat_id) or Subscription()

    async def subscribe(self, chat_id: int, goal_id: str | None) -> Subscription:
        def add(sub: Subscription) -> Subscription:
            if goal_id is None:
                return Subscription(all=True, goals=sub.goals)
            return sub if goal_id in sub.goals else Subscription(all=sub.all, goals=[*sub.goals, goal_id])

        return await self._change_chat(chat_id, add)

    async def unsubscribe(self, chat_id: int, goal_id: str | None) -> Subscription:
        def remove(sub: Subscription) -> Subscription:
            if goal_id is None:
                return Subscription()
            return Subscription(all=sub.all, goals=[g for g in sub.goals if g != goal_id])

        return await self._change_chat(chat_id, remove)

    async def chats_for(self, goal_id: str | None) -> list[int]:
        """Chats subscribed to everything, and those following this goal."""
        return sorted(
            chat for chat, sub in (await self.subscriptions()).items() if sub.all or (goal_id and goal_id in sub.goals)
        )

    async def followers(self, goal_id: str) -> list[int]:
        """Chats following this goal by name (progress is for them, not for everything-subscribers)."""
        return sorted(chat for chat, sub in (await self.subscriptions()).items() if goal_id in sub.goals)

    async def fold_chat_entries(self) -> None:
        """Subscriptions kept an entry a chat by an earlier gateway are moved into the one entry."""
        try:
            keys = [k for k in await self.kv.keys() if k.startswith("sub.")]
        except NoKeysError:
            return
        for key in keys:
            old = await self._get(key, Subscription)
            chat_id = int(key.split(".", 1)[1])
            if old is not None:

                def merge(sub: Subscription, old: Subscription = old) -> Subscription:
                    goals = [*sub.goals, *(g for g in old.goals if g not in sub.goals)]
                    return Subscription(all=sub.all or old.all, goals=goals)

                await self._change_chat(chat_id, merge)
            await self.kv.delete(key)

    # approval alerts
    async def posted(self, approval_id: str) -> list[PostedAlert]:
        return await self._get(f"alert.{approval_id}", list[PostedAlert]) or []

    async def add_posted(self, approval_id: str, alert: PostedAlert) -> None:
        """Remember one more place the alert was posted (once: a restarted sender tells it again)."""

        def add(posted: list[PostedAlert] | None) -> list[PostedAlert]:
            posted = posted or []
            known = any((p.chat_id, p.message_id) == (alert.chat_id, alert.message_id) for p in posted)
            return posted if known else [*posted, alert]

        await self._change(f"alert.{approval_id}", list[PostedAlert], add)

    async def set_decided(self, approval_id: str, line: str) -> None:
        await self._put(f"decided.{approval_id}", line)

    async def decided(self, approval_id: str) -> str | None:
        return await self._get(f"decided.{approval_id}", str)

"""What the gateway owns, kept in a JetStream key-value bucket so a restart loses nothing: chat
subscriptions, where each approval alert was posted, decisions on their way, users already refused."""

from typing import TypeVar

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

T = TypeVar("T")
BUCKET = "nexus_chat"  # subscriptions and refused users: kept
MARKS_BUCKET = "nexus_chat_marks"  # alerts posted, decisions sent, events seen: forgotten after a week
MARKS_TTL_S = 7 * 86400


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
        return cls(await open_bucket(js, BUCKET), await open_bucket(js, MARKS_BUCKET, MARKS_TTL_S))

    def _bucket(self, key: str) -> KeyValue:
        return self.kv if key.startswith(("sub.", "refused.")) else self.marks

    async def _get(self, key: str, type_: type[T]) -> T | None:
        try:
            entry = await self._bucket(key).get(key)
        except KeyNotFoundError:
            return None
        return msgspec.json.decode(entry.value, type=type_) if entry.value else None

    async def _put(self, key: str, value: object) -> None:
        await self._bucket(key).put(key, msgspec.json.encode(value))

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
    async def subscription(self, chat_id: int) -> Subscription:
        return await self._get(f"sub.{chat_id}", Subscription) or Subscription()

    async def subscribe(self, chat_id: int, goal_id: str | None) -> Subscription:
        sub = await self.subscription(chat_id)
        if goal_id is None:
            sub.all = True
        elif goal_id not in sub.goals:
            sub.goals.append(goal_id)
        await self._put(f"sub.{chat_id}", sub)
        return sub

    async def unsubscribe(self, chat_id: int, goal_id: str | None) -> Subscription:
        sub = await self.subscription(chat_id)
        sub = (
            Subscription()
            if goal_id is None
            else Subscription(all=sub.all, goals=[g for g in sub.goals if g != goal_id])
        )
        await self._put(f"sub.{chat_id}", sub)
        return sub

    async def chats_for(self, goal_id: str | None) -> list[int]:
        """Chats subscribed to everything, and those following this goal."""
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return []
        chats = []
        for key in keys:
            if not key.startswith("sub."):
                continue
            sub = await self._get(key, Subscription)
            if sub and (sub.all or (goal_id and goal_id in sub.goals)):
                chats.append(int(key.split(".", 1)[1]))
        return sorted(chats)

    async def followers(self, goal_id: str) -> list[int]:
        """Chats following this goal by name (progress is for them, not for everything-subscribers)."""
        return [c for c in await self.chats_for(goal_id) if goal_id in (await self.subscription(c)).goals]

    # approval alerts
    async def posted(self, approval_id: str) -> list[PostedAlert]:
        return await self._get(f"alert.{approval_id}", list[PostedAlert]) or []

    async def add_posted(self, approval_id: str, alert: PostedAlert) -> None:
        await self._put(f"alert.{approval_id}", [*await self.posted(approval_id), alert])

    async def set_decided(self, approval_id: str, line: str) -> None:
        await self._put(f"decided.{approval_id}", line)

    async def decided(self, approval_id: str) -> str | None:
        return await self._get(f"decided.{approval_id}", str)

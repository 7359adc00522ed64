"""The gateway's own state under concurrent writers: nothing one writer does is lost to another, and a
reader never misses a chat whose subscription is being rewritten."""

import asyncio
import uuid

import msgspec

from nexus.events.bus import connect
from nexus.telegram_gateway.store import ChatStore, PostedAlert, Subscription, open_bucket


async def _store(nats_url: str, nats_creds: str):
    nc = await connect(nats_url, "test-store", creds=nats_creds)
    js = nc.jetstream()
    tag = uuid.uuid4().hex[:8]
    return nc, ChatStore(await open_bucket(js, f"chat_{tag}"), await open_bucket(js, f"marks_{tag}"))


async def test_alerts_posted_at_once_in_many_chats_are_all_remembered(nats_url: str, nats_creds: str) -> None:
    """Each chat's sender records where it posted the alert; a decision edits every one of them."""
    nc, store = await _store(nats_url, nats_creds)
    await asyncio.gather(
        *(store.add_posted("apr_x", PostedAlert(chat_id=c, message_id=100 + c, text="t")) for c in range(20))
    )
    assert sorted(p.chat_id for p in await store.posted("apr_x")) == list(range(20))
    # told again by the sender that finishes a killed one's alert: still one place, edited once
    await store.add_posted("apr_x", PostedAlert(chat_id=3, message_id=103, text="t"))
    assert len(await store.posted("apr_x")) == 20
    await nc.drain()


async def test_chats_subscribing_at_once_are_all_subscribed(nats_url: str, nats_creds: str) -> None:
    nc, store = await _store(nats_url, nats_creds)
    await asyncio.gather(*(store.subscribe(c, None if c % 2 else f"goal_{c}") for c in range(1, 21)))
    assert await store.chats_for(None) == list(range(1, 21, 2))
    assert await store.chats_for("goal_4") == sorted([*range(1, 21, 2), 4])
    assert await store.followers("goal_4") == [4]
    await nc.drain()


async def test_a_subscription_being_rewritten_is_never_missed_by_an_alert(nats_url: str, nats_creds: str) -> None:
    """A chat subscribed to everything follows goals one by one while alerts look up who to tell: every
    lookup finds it (it never stopped being subscribed)."""
    nc, store = await _store(nats_url, nats_creds)
    for chat in (1001, 2002, 3003):
        await store.subscribe(chat, None)
    missed: list[list[int]] = []

    async def rewrite() -> None:
        for i in range(60):
            await store.subscribe(2002, f"goal_{i}")

    async def look() -> None:
        for _ in range(60):
            chats = await store.chats_for(None)
            if chats != [1001, 2002, 3003]:
                missed.append(chats)

    await asyncio.gather(rewrite(), look(), look())
    assert not missed
    assert (await store.subscription(2002)).goals == [f"goal_{i}" for i in range(60)]
    await nc.drain()


async def test_unsubscribing_from_everything_forgets_the_chat(nats_url: str, nats_creds: str) -> None:
    nc, store = await _store(nats_url, nats_creds)
    await store.subscribe(7, "goal_a")
    await store.subscribe(7, None)
    assert await store.unsubscribe(7, "goal_a") == Subscription(all=True)
    assert await store.unsubscribe(7, None) == Subscription()
    assert await store.subscriptions() == {}
    await nc.drain()


async def test_subscriptions_kept_a_chat_an_entry_are_folded_into_one(nats_url: str, nats_creds: str) -> None:
    """An earlier gateway kept one entry a chat: a gateway starting over that bucket keeps them all."""
    nc, store = await _store(nats_url, nats_creds)
    await store.kv.put("sub.11", msgspec.json.encode(Subscription(all=True)))
    await store.kv.put("sub.-22", msgspec.json.encode(Subscription(goals=["goal_b"])))
    await store.kv.put("refused.5", b"1")
    await store.subscribe(-22, "goal_c")
    await store.fold_chat_entries()
    assert await store.subscriptions() == {
        11: Subscription(all=True),
        -22: Subscription(goals=["goal_c", "goal_b"]),
    }
    assert sorted(await store.kv.keys()) == ["refused.5", "subscriptions"]
    await nc.drain()

"""The API-key cache: one database load however many requests miss at once, reloads ahead of
expiry in the background (no request waits), and a revocation still gets through."""

import asyncio
import uuid

import pytest

from nexus.core_api.auth.keys import KeyCache, create_key
from nexus.db.documents import ApiKey
from nexus.db.writes import update_document
from nexus.domain.roles import Role

pytestmark = pytest.mark.infra


async def _settled(cache: KeyCache) -> None:
    while cache._loading or cache._tasks:  # background loads and bookkeeping, bounded by the test timeout
        await asyncio.sleep(0.01)


async def test_concurrent_misses_load_once_and_record_use(fresh_db) -> None:
    doc, raw = await create_key("ci", Role.VIEWER, created_by="test")
    cache = KeyCache(ttl_s=60)
    found = await asyncio.gather(*(cache.lookup(raw) for _ in range(32)))
    assert {p.key_id for p in found} == {doc.id} and cache.loads == 1
    await _settled(cache)
    assert (await ApiKey.get(doc.id)).last_used_at is not None
    assert await cache.lookup("nxk_" + uuid.uuid4().hex) is None and cache.loads == 2


async def test_reloads_ahead_of_expiry_in_the_background_and_sees_a_revocation(fresh_db) -> None:
    doc, raw = await create_key("ci", Role.LEAD, created_by="test")
    cache = KeyCache(ttl_s=60, refresh_at=0.0)  # every hit is old enough to be reloaded behind it
    assert (await cache.lookup(raw)).role == Role.LEAD
    await update_document(
        ApiKey, doc.id, {"$set": {"revoked": True}}
    )  # as keys/service revokes; the use-time write may race it
    assert (await cache.lookup(raw)) is not None  # served from the valid entry while it reloads
    await _settled(cache)
    assert cache.loads == 2 and await cache.lookup(raw) is None


async def test_made_up_keys_do_not_push_real_ones_out(fresh_db) -> None:
    """Anyone may send unknown keys; however many, a real key stays cached (no database read per request)."""
    doc, raw = await create_key("ci", Role.VIEWER, created_by="test")
    cache = KeyCache(ttl_s=60, max_entries=8)
    assert (await cache.lookup(raw)).key_id == doc.id
    for _ in range(3 * cache.max_entries):
        assert await cache.lookup("nxk_" + uuid.uuid4().hex) is None
    loads = cache.loads
    assert (await cache.lookup(raw)).key_id == doc.id and cache.loads == loads

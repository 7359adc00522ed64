"""The by-id read cache never serves a document older than the last write this process made."""

import uuid

import pytest

from nexus.db.cache import ReadCache, cached_get, install
from nexus.db.connection import connect_db
from nexus.db.documents import Goal

pytestmark = pytest.mark.infra


@pytest.fixture
async def cache(mongo_url):
    cache = ReadCache(ttl_s=60)
    client = await connect_db(mongo_url, f"cache_{uuid.uuid4().hex[:8]}", listeners=[cache])
    install(cache)
    yield cache
    install(None)
    await client.close()


async def test_hits_until_a_write_then_reads_fresh(cache: ReadCache) -> None:
    goal = Goal(id=f"goal_{uuid.uuid4().hex}", title="first")
    await goal.insert()
    assert (await cached_get(Goal, goal.id)).title == "first"
    assert (await cached_get(Goal, goal.id)).title == "first"
    assert cache.hits == 1
    await Goal.get_pymongo_collection().update_one({"_id": goal.id}, {"$set": {"title": "second"}})
    assert (await cached_get(Goal, goal.id)).title == "second"
    await Goal.find_one(Goal.id == goal.id).update({"$set": {"title": "third"}})
    assert (await cached_get(Goal, goal.id)).title == "third"


async def test_a_read_that_raced_a_write_is_not_kept(cache: ReadCache) -> None:
    goal = Goal(id=f"goal_{uuid.uuid4().hex}", title="before")
    await goal.insert()
    coll = Goal.get_pymongo_collection().full_name
    original_get = Goal.get

    async def slow_get(doc_id, *a, **kw):
        doc = await original_get(doc_id, *a, **kw)
        cache.generations[coll] = cache.generations.get(coll, 0) + 1  # a write landed meanwhile
        return doc

    Goal.get = slow_get  # type: ignore[method-assign]
    try:
        await cached_get(Goal, goal.id)
    finally:
        Goal.get = original_get  # type: ignore[method-assign]
    assert not cache.entries

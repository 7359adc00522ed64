"""The by-id read cache never serves a document older than the last write this process made."""

import asyncio
import uuid

import pytest

from nexus.db.cache import ReadCache, cached_find, cached_get, install
from nexus.db.connection import connect_db
from nexus.db.documents import AgentBudget, Goal

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

    async def read_then_a_write_lands(doc_id, *a, **kw):
        doc = await original_get(doc_id, *a, **kw)
        # A real write through the same client lands after the read answered, before it is cached.
        await Goal.get_pymongo_collection().update_one({"_id": goal.id}, {"$set": {"title": "after"}})
        return doc

    Goal.get = read_then_a_write_lands  # type: ignore[method-assign]  # the test gates the read
    try:
        stale = await cached_get(Goal, goal.id)
    finally:
        Goal.get = original_get  # type: ignore[method-assign]  # the original read restored
    assert stale.title == "before"  # the racing read itself answered what it read
    assert not cache.entries and cache.generations.get(coll, 0) > 0
    assert (await cached_get(Goal, goal.id)).title == "after"  # and nobody is served it afterwards


async def test_a_read_between_a_write_sent_and_its_answer_is_not_kept(cache: ReadCache, mongo_url) -> None:
    """A read that starts after a write was sent can be answered before the database applies it: kept, it
    was served as current until the TTL (a PUT answered, then a GET showed the revision before it)."""
    from datetime import timedelta

    from pymongo import AsyncMongoClient, monitoring

    goal = Goal(id=f"goal_{uuid.uuid4().hex}", title="before")
    await goal.insert()
    coll = Goal.get_pymongo_collection()
    db, name = coll.database.name, coll.name
    update = {"update": name, "updates": [{"q": {"_id": goal.id}, "u": {"$set": {"title": "after"}}}]}
    conn = ("127.0.0.1", 1)
    cache.started(monitoring.CommandStartedEvent(update, db, 424242, conn, None))  # the write is sent
    original_get = Goal.get
    # The same write as the database applies it, on a connection this cache does not watch.
    other = AsyncMongoClient(mongo_url)

    async def answered_before_the_write_lands(doc_id, *a, **kw):
        doc = await original_get(doc_id, *a, **kw)  # the read is answered first (the old title)...
        await other[db][name].update_one({"_id": goal.id}, {"$set": {"title": "after"}})  # ...then it lands
        cache.succeeded(monitoring.CommandSucceededEvent(timedelta(0), {"ok": 1}, "update", 424242, conn, None))
        return doc

    Goal.get = answered_before_the_write_lands  # type: ignore[method-assign]  # the test orders the two
    try:
        stale = await cached_get(Goal, goal.id)
    finally:
        Goal.get = original_get  # type: ignore[method-assign]  # the original read restored
        await other.close()
    assert stale.title == "before"  # the read itself answered what it read
    assert (await cached_get(Goal, goal.id)).title == "after"  # nobody is served it afterwards


async def test_concurrent_misses_share_one_read_unless_a_write_comes_between(cache: ReadCache) -> None:
    goal = Goal(id=f"goal_{uuid.uuid4().hex}", title="shared")
    await goal.insert()
    docs = await asyncio.gather(*(cached_get(Goal, goal.id) for _ in range(32)))
    assert {d.title for d in docs} == {"shared"}
    assert (cache.misses, cache.shared) == (1, 31)

    gate = asyncio.Event()
    original_get = Goal.get

    async def gated_get(doc_id, *a, **kw):
        await gate.wait()
        return await original_get(doc_id, *a, **kw)

    cache.entries.clear()
    Goal.get = gated_get  # type: ignore[method-assign]  # the test gates the read
    try:
        first = asyncio.ensure_future(cached_get(Goal, goal.id))
        await asyncio.sleep(0)
        await Goal.get_pymongo_collection().update_one({"_id": goal.id}, {"$set": {"title": "after"}})
        second = asyncio.ensure_future(cached_get(Goal, goal.id))  # after the write: its own read
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, second)
    finally:
        Goal.get = original_get  # type: ignore[method-assign]  # the original read restored
    assert second.result().title == "after" and cache.misses == 3


async def test_a_listing_is_cached_until_a_write_to_its_collection(cache: ReadCache) -> None:
    tag = uuid.uuid4().hex
    for i in range(3):
        await Goal(id=f"goal_{tag}_{i}", title=f"list {i}", created_by=tag).insert()
    query, sort = {"created_by": tag}, [("_id", -1)]
    first = await cached_find(Goal, query, sort, 10)
    again = await cached_find(Goal, query, sort, 10)
    assert [g.title for g in first] == ["list 2", "list 1", "list 0"] and again is first
    assert [g.title for g in await cached_find(Goal, query, sort, 2)] == [
        "list 2",
        "list 1",
    ]  # another query, its own entry
    await Goal(id=f"goal_{tag}_9", title="list 9", created_by=tag).insert()
    assert [g.title for g in await cached_find(Goal, query, sort, 10)][0] == "list 9"


async def test_expired_entries_do_not_pile_up(mongo_url) -> None:
    """What is past its TTL is dropped as new reads come in, not kept until the cap (a long-running
    core-api read every run's documents into the cache and grew with them)."""
    cache = ReadCache(ttl_s=0)  # every entry expires at once
    client = await connect_db(mongo_url, f"cache_{uuid.uuid4().hex[:8]}", listeners=[cache])
    install(cache)
    try:
        for i in range(5):
            goal = Goal(id=f"goal_{uuid.uuid4().hex}", title=f"goal {i}")
            await goal.insert()
            assert (await cached_get(Goal, goal.id)).title == f"goal {i}"
        assert len(cache.entries) <= 1, cache.entries
    finally:
        install(None)
        await client.close()


async def test_a_missing_document_is_remembered_only_when_asked_and_only_until_a_write(cache: ReadCache) -> None:
    agent_id = f"agt_{uuid.uuid4().hex}"
    assert await cached_get(AgentBudget, agent_id) is None
    assert await cached_get(AgentBudget, agent_id, keep_missing=True) is None  # not kept by the first read
    assert cache.hits == 0
    assert await cached_get(AgentBudget, agent_id, keep_missing=True) is None
    assert cache.hits == 1
    await AgentBudget(id=agent_id, daily_usd=5.0).insert()  # a write to the collection: the miss is stale
    assert (await cached_get(AgentBudget, agent_id, keep_missing=True)).daily_usd == 5.0


async def test_a_write_to_one_document_leaves_the_others_cached(cache: ReadCache) -> None:
    """Under load every run is written all the time: a write keyed by id must not empty the cache of
    every other run, or a read by id always misses."""
    tag = uuid.uuid4().hex
    goals = [Goal(id=f"goal_{tag}_{i}", title=f"goal {i}") for i in range(3)]
    for g in goals:
        await g.insert()
    for g in goals:
        await cached_get(Goal, g.id)
    coll = Goal.get_pymongo_collection()
    await coll.update_one({"_id": goals[0].id}, {"$set": {"title": "changed"}})  # update, keyed
    await Goal.find_one(Goal.id == goals[0].id).update({"$set": {"title": "changed again"}})  # beanie's
    await coll.find_one_and_update({"_id": {"$eq": goals[0].id}}, {"$set": {"title": "and again"}})
    await Goal(id=f"goal_{tag}_new", title="new").insert()  # an insert of another id
    hits = cache.hits
    assert (await cached_get(Goal, goals[1].id)).title == "goal 1"
    assert (await cached_get(Goal, goals[2].id)).title == "goal 2"
    assert cache.hits == hits + 2  # still cached
    assert (await cached_get(Goal, goals[0].id)).title == "and again"  # the written one is read fresh


async def test_writes_not_keyed_by_id_make_every_entry_stale(cache: ReadCache) -> None:
    tag = uuid.uuid4().hex
    goals = [Goal(id=f"goal_{tag}_{i}", title="before", created_by=tag) for i in range(3)]
    for g in goals:
        await g.insert()
        await cached_get(Goal, g.id)
    coll = Goal.get_pymongo_collection()
    await coll.update_many({"created_by": tag}, {"$set": {"title": "by field"}})
    assert {(await cached_get(Goal, g.id)).title for g in goals} == {"by field"}
    await coll.update_many({"_id": {"$in": [goals[0].id, goals[1].id]}}, {"$set": {"title": "by ids"}})
    assert [(await cached_get(Goal, g.id)).title for g in goals] == ["by ids", "by ids", "by field"]
    await coll.delete_one({"_id": goals[2].id})
    assert await cached_get(Goal, goals[2].id) is None
    # remembered missing, then inserted: read fresh
    missing = f"goal_{tag}_later"
    assert await cached_get(Goal, missing, keep_missing=True) is None
    await Goal(id=missing, title="arrived").insert()
    assert (await cached_get(Goal, missing, keep_missing=True)).title == "arrived"


def test_written_ids_name_only_what_a_command_can_change() -> None:
    from nexus.db.cache import written_ids

    assert written_ids("update", {"updates": [{"q": {"_id": "a", "version": 3}}, {"q": {"_id": {"$in": ["b"]}}}]}) == [
        "a",
        "b",
    ]
    assert written_ids("update", {"updates": [{"q": {"_id": "a"}}, {"q": {"status": "x"}}]}) is None
    assert written_ids("update", {"updates": [{"q": {"_id": {"$gt": "a"}}}]}) is None
    assert written_ids("delete", {"deletes": [{"q": {"_id": "a"}, "limit": 1}]}) == ["a"]
    assert written_ids("insert", {"documents": [{"_id": "a"}, {"_id": "b"}]}) == ["a", "b"]
    assert written_ids("insert", {}) is None  # documents not shown: not keyed
    assert written_ids("findAndModify", {"query": {"_id": "a"}}) == ["a"]
    assert written_ids("findAndModify", {"query": {"title": "a"}}) is None
    assert written_ids("drop", {}) is None


async def test_a_run_config_is_read_once_and_a_missing_one_is_not_remembered(cache: ReadCache) -> None:
    from nexus.db.documents import RunConfigRecord
    from nexus.db.run_configs import config_of

    run_id = f"run_{uuid.uuid4().hex}"
    assert await config_of(run_id) is None  # not stored yet: not remembered as missing
    await RunConfigRecord(id=run_id, config={"agent_id": "a"}).insert()
    assert await config_of(run_id) == {"agent_id": "a"}
    hits = cache.hits
    assert await config_of(run_id) == {"agent_id": "a"}
    assert cache.hits == hits + 1  # configs never change once stored: the second read is the cache's

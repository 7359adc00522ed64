"""List pages by insert bucket (nexus.db.paging), and the indexes FerretDB's pushed-down filters use."""

import asyncio
import uuid

import pytest

from nexus.core_api.pagination import page_of
from nexus.db import paging
from nexus.db.connection import ensure_indexes
from nexus.db.documents import AuditEntry, Session
from nexus.db.writes import update_document
from nexus.domain.ids import new_id


async def _audit(n: int, action=lambda i: "task.create") -> list[str]:
    ids = []
    for i in range(n):
        doc = AuditEntry(id=new_id("aud"), actor="k", action=action(i), resource=f"tasks/{i}")
        await doc.insert()
        ids.append(doc.id)
    return ids


async def _all_pages(filters: dict, limit: int) -> list[str]:
    seen, cursor = [], None
    for _ in range(1000):
        docs, cursor = await page_of(AuditEntry, filters, limit, cursor, cache=False)
        seen.extend(d.id for d in docs)
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end")


async def test_inserts_take_consecutive_buckets(fresh_db) -> None:
    ids = await _audit(paging.BUCKET * 2 + 5)
    pages = [(await AuditEntry.get(i)).page for i in ids]
    assert pages == sorted(pages)
    assert [pages.count(p) for p in sorted(set(pages))] == [paging.BUCKET, paging.BUCKET, 5]
    assert await paging.newest_page(AuditEntry) == pages[-1]


async def test_pages_walk_every_bucket_newest_first(fresh_db) -> None:
    if await paging.sorts_natively(AuditEntry):
        pytest.skip("MongoDB pages by sort")
    ids = await _audit(paging.BUCKET * 3 + 7)
    first, _ = await page_of(AuditEntry, {}, 20, None, cache=False)
    assert [d.id for d in first] == sorted(ids, reverse=True)[:20]
    assert await _all_pages({}, 13) == sorted(ids, reverse=True)


async def test_filtered_pages_dense_and_sparse(fresh_db) -> None:
    ids = await _audit(paging.BUCKET * 3, action=lambda i: "task.update" if i % 3 else "task.create")
    updates = [i for n, i in enumerate(ids) if n % 3]
    assert await _all_pages({"action": "task.update"}, 17) == sorted(updates, reverse=True)
    rare = await _audit(2, action=lambda i: "goal.create")  # too sparse for a short walk: the plain query
    assert await _all_pages({"action": "goal.create"}, 5) == sorted(rare, reverse=True)


async def test_documents_without_a_bucket_are_still_listed(fresh_db) -> None:
    old = new_id("aud")
    await AuditEntry.get_pymongo_collection().insert_one({"_id": old, "actor": "k", "action": "a", "resource": "r"})
    ids = await _audit(3)
    assert await _all_pages({}, 2) == sorted([old, *ids], reverse=True)


async def test_an_upserted_document_takes_a_bucket(fresh_db) -> None:
    await update_document(Session, "ses_1", {"$setOnInsert": {"run_id": "run_1"}}, upsert=True)
    doc = await Session.get_pymongo_collection().find_one({"_id": "ses_1"})
    assert doc["page"] >= 1


async def test_pushed_down_equality_uses_an_index(fresh_db) -> None:
    """On FerretDB's PostgreSQL handler, `_id` and indexed fields are read through an index, not a scan."""
    await ensure_indexes()
    ids = await _audit(50)
    db = AuditEntry.get_pymongo_collection().database
    for flt in ({"_id": ids[7]}, {"page": 1}):
        plan = (await db.command("explain", {"find": "audit_entries", "filter": flt}))["queryPlanner"]
        if "Plan" not in plan:
            pytest.skip("not FerretDB's PostgreSQL handler")
        assert "Index Scan" in str(plan["Plan"]), plan


async def test_find_each_is_in_by_equalities(fresh_db) -> None:
    from nexus.db.lookup import find_each

    await _audit(5, action=lambda i: ["a", "b", "c"][i % 3])
    got = await find_each(AuditEntry, "action", ["a", "c", "a"])
    want = await AuditEntry.find({"action": {"$in": ["a", "c"]}}).to_list()
    assert sorted(d.id for d in got) == sorted(d.id for d in want) and len(got) == 3


async def test_a_middling_filter_walks_on_as_far_as_its_rate_says() -> None:
    """One match in ten: a short walk finds too few, so it walks on (a few more buckets) instead of
    handing the page to the plain read, which would sort every match in history."""

    class Doc:
        def __init__(self, id_: str) -> None:
            self.id = id_

    buckets = {
        p: [Doc(f"d{p:04}{i:02}") for i in range(paging.BUCKET) if (p * paging.BUCKET + i) % 10 == 0]
        for p in range(1, 201)
    }
    reads: list[int] = []
    rounds: list[int] = []  # how many reads were under way together, at each read's end
    inflight = 0

    async def find(query: dict, n: int) -> list:
        nonlocal inflight
        reads.append(query["page"])
        inflight += 1
        await asyncio.sleep(0)  # a round trip: the reads started with this one are under way together
        rounds.append(inflight)
        inflight -= 1
        return buckets[query["page"]][:n]

    got = await paging.bucket_walk(None, {"status": "failed"}, 25, 199, None, find)
    assert got is not None and len(got) == 26
    assert [d.id for d in got] == sorted((d.id for p in range(200, 0, -1) for d in buckets[p]), reverse=True)[:26]
    assert len(reads) <= 10 and reads == list(range(200, 200 - len(reads), -1))
    # The first bucket alone, then the rest its rate says, together: not one round trip after another.
    assert rounds[0] == 1 and max(rounds) > 2, rounds
    # One in a hundred: more than MAX_WALK buckets would be needed, so the plain read answers.
    sparse = {p: docs[:1] if p % 3 == 0 else [] for p, docs in buckets.items()}
    reads.clear()

    async def find_sparse(query: dict, n: int) -> list:
        reads.append(query["page"])
        return sparse[query["page"]][:n]

    assert await paging.bucket_walk(None, {"status": "failed"}, 25, 199, None, find_sparse) is None
    assert len(reads) <= paging.MAX_WALK


async def test_a_part_filled_newest_bucket_does_not_make_the_walk_read_ahead() -> None:
    """The newest bucket is usually part-filled (the block core-api is filling): its few documents are
    not a low rate of matches, so the walk reads one more bucket (which fills the page), not three."""

    class Doc:
        def __init__(self, id_: str) -> None:
            self.id = id_

    class Coll:
        full_name = f"test.part_filled_{uuid.uuid4().hex}"

    class Docs:
        @staticmethod
        def get_pymongo_collection() -> Coll:
            return Coll()

    block = paging._blocks[Coll.full_name] = paging._Block()
    block.page, block.used = 50, 8  # this process has put 8 documents in bucket 50 so far
    buckets = {p: [Doc(f"d{p:04}{i:02}") for i in range(8 if p == 50 else paging.BUCKET)] for p in range(1, 51)}
    reads: list[int] = []

    async def find(query: dict, n: int) -> list:
        reads.append(query["page"])
        return sorted(buckets[query["page"]], key=lambda d: d.id, reverse=True)[:n]  # a bucket's newest n

    try:
        got = await paging.bucket_walk(Docs, {}, 25, 49, None, find)
    finally:
        del paging._blocks[Coll.full_name]
    assert (
        got is not None
        and [d.id for d in got] == sorted((d.id for p in (50, 49) for d in buckets[p]), reverse=True)[:26]
    )
    assert reads == [50, 49]

"""The price list runs are costed with: data in the database, seeded once from the published list,
changed by admins through the API; each run is handed its model's price when it is dispatched."""

import asyncio
import time

from pymongo.errors import BulkWriteError

from nexus.core_api.errors import not_found
from nexus.core_api.prices.schemas import PriceOut
from nexus.core_api.schemas import iso
from nexus.db.documents import ModelPrice, now
from nexus.db.writes import update_document
from nexus.domain.pricing import DEFAULT_PRICES, price_in


def to_out(p: ModelPrice) -> PriceOut:
    return PriceOut(
        model=p.id,
        input_per_mtok=p.input_per_mtok,
        output_per_mtok=p.output_per_mtok,
        updated_by=p.updated_by,
        updated_at=iso(p.updated_at),
    )


async def seed() -> int:
    """Insert the published prices of models the list does not have yet; an admin's rows stay."""
    have = {d["_id"] async for d in ModelPrice.get_pymongo_collection().find({}, {"_id": 1})}
    docs = [
        {"_id": m, "input_per_mtok": i, "output_per_mtok": o, "updated_by": "seed", "updated_at": now()}
        for m, (i, o) in DEFAULT_PRICES.items()
        if m not in have
    ]
    forget()  # this database's list, not one read before
    if not docs:
        return 0
    try:
        return len((await ModelPrice.get_pymongo_collection().insert_many(docs, ordered=False)).inserted_ids)
    except BulkWriteError as exc:  # another core-api seeded at the same time
        return int(exc.details.get("nInserted", 0))


# Read per dispatch, changed rarely: kept for a few seconds (another core-api's edit shows within that).
TABLE_TTL_S = 5.0
Table = dict[str, tuple[float, float]]
_table: tuple[float, Table] | None = None
# The read under way: dispatches that find the table stale meanwhile wait for it instead of each reading
# the whole list (at 20 dispatches a second, a read per dispatch in flight at each expiry).
_reading: asyncio.Task[Table] | None = None
_generation = 0  # a read started before a change of the list is not kept


def forget() -> None:
    global _table, _reading, _generation
    _table, _reading = None, None
    _generation += 1


async def table() -> Table:
    global _reading
    if _table is not None and time.monotonic() - _table[0] < TABLE_TTL_S:
        return _table[1]
    if _reading is None or _reading.done() or _reading.get_loop() is not asyncio.get_running_loop():
        _reading = asyncio.create_task(_read(_generation))
    return await asyncio.shield(_reading)


async def _read(generation: int) -> Table:
    global _table
    rows = {
        d["_id"]: (d["input_per_mtok"], d["output_per_mtok"])
        async for d in ModelPrice.get_pymongo_collection().find({})
    }
    if generation == _generation:
        _table = (time.monotonic(), rows)
    return rows


async def price_for(model: str) -> tuple[float, float] | None:
    """The model's (input, output) USD per 1M tokens by the longest matching entry; None: unpriced."""
    return price_in(await table(), model)


async def put(model: str, input_per_mtok: float, output_per_mtok: float, by: str) -> ModelPrice:
    await update_document(
        ModelPrice,
        model,
        {
            "$set": {
                "input_per_mtok": input_per_mtok,
                "output_per_mtok": output_per_mtok,
                "updated_by": by,
                "updated_at": now(),
            }
        },
        upsert=True,
    )
    forget()
    return await get(model)


async def get(model: str) -> ModelPrice:
    doc = await ModelPrice.get(model)
    if doc is None:
        raise not_found("price", model)
    return doc


async def delete(model: str) -> None:
    await get(model)
    await ModelPrice.get_pymongo_collection().delete_one({"_id": model})
    forget()

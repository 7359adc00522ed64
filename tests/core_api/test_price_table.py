"""The price list a dispatch reads is kept for a few seconds; dispatches that find it stale at the same
moment share one read of it (real FerretDB), and a change of the list is never overwritten by a read
started before it."""

import asyncio
import uuid

import pytest

from nexus.core_api.prices import service as prices
from nexus.db.stats import COMMANDS
from tests.core_api.conftest import in_app

pytestmark = pytest.mark.infra


def _reads() -> float:
    return COMMANDS.labels("find", "model_prices", "ok")._value.get()


async def _together(n: int, model: str) -> list:
    prices.forget()  # stale for all of them
    return await asyncio.gather(*(prices.price_for(model) for _ in range(n)))


async def test_dispatches_that_find_the_list_stale_share_one_read(client) -> None:
    before = _reads()
    found = await in_app(client, _together, 40, "gpt-4o")
    assert found == [(2.5, 10.0)] * 40
    assert _reads() - before == 1


class HeldReads:
    """The price collection, whose finds each read at once and hand their rows over only when their own
    gate (the next of `gates`, in the order the finds were made) is set."""

    def __init__(self, collection, gates: list[asyncio.Event]) -> None:
        self.collection, self.gates = collection, list(gates)

    def __getattr__(self, name: str):
        return getattr(self.collection, name)

    async def _held(self, gate: asyncio.Event, args):
        rows = [doc async for doc in self.collection.find(*args)]
        await gate.wait()
        for doc in rows:
            yield doc

    def find(self, *args):
        return self._held(self.gates.pop(0), args)


async def test_a_read_started_before_a_change_does_not_stand_as_the_list(client, monkeypatch) -> None:
    model = f"house-model-{uuid.uuid4().hex[:6]}"
    real = prices.ModelPrice.get_pymongo_collection()

    async def change_during_a_read() -> tuple:
        before, after = asyncio.Event(), asyncio.Event()
        held = HeldReads(real, [before, after])
        monkeypatch.setattr(prices.ModelPrice, "get_pymongo_collection", staticmethod(lambda: held))
        prices.forget()
        first = asyncio.ensure_future(prices.price_for(model))  # reads the list before the change
        while len(held.gates) == 2:  # until its find is made
            await asyncio.sleep(0)
        await prices.put(model, 1.0, 2.0, "tests")  # forgets the list
        changed = asyncio.ensure_future(prices.price_for(model))  # a read of the list as it is now
        after.set()
        seen = await changed
        before.set()  # the read from before the change ends last
        return await first, seen, await prices.price_for(model)

    earlier, changed, later = await in_app(client, change_during_a_read)
    assert earlier is None  # what the list held when that read was made
    assert changed == later == (1.0, 2.0)  # the older read did not replace the list read after the change

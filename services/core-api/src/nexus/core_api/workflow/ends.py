"""The runs whose end this process stored lately: a run's event stream, waiting to end until its run's
end is stored, asks here first and reads the database only now and then (another core-api may have
stored it); a request waiting for a run's end is woken here the moment it is stored. Bounded: the oldest
are forgotten first."""

import asyncio
from collections import OrderedDict

KEPT = 20_000
_ended: OrderedDict[str, None] = OrderedDict()
_waiting: dict[str, set[asyncio.Future[None]]] = {}


def stored(run_id: str) -> None:
    """Called once a run's end is stored."""
    _ended[run_id] = None
    _ended.move_to_end(run_id)
    while len(_ended) > KEPT:
        _ended.popitem(last=False)
    for waiter in _waiting.pop(run_id, ()):
        if not waiter.done():
            waiter.set_result(None)


def known_ended(run_id: str) -> bool:
    return run_id in _ended


async def until_stored(run_id: str, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for this process to store the run's end; whether it did (or had lately)."""
    if known_ended(run_id):
        return True
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    _waiting.setdefault(run_id, set()).add(waiter)
    try:
        await asyncio.wait_for(waiter, timeout_s)
        return True
    except TimeoutError:
        return False
    finally:
        left = _waiting.get(run_id)
        if left is not None:
            left.discard(waiter)
            if not left:
                del _waiting[run_id]

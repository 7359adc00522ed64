"""The runs whose end was stored lately: by this process, or by any core-api as its announcement of the
end (published once the end is stored) says. A run's event stream, waiting to end until its run's end is
stored, asks here first; a request waiting for a run's end is woken here the moment it is stored. The
database is read only now and then besides (an announcement heard over core NATS may be lost while the
connection is down). Bounded: the oldest are forgotten first."""

import asyncio
import logging
from collections import OrderedDict

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from nexus.events.catalog import spec
from nexus.events.envelope import decode_raw
from nexus.events.payloads import RunChanged

log = logging.getLogger("nexus.core_api.ends")
# The announcements of a run's end (each published after the end is stored, its task moved).
ANNOUNCED_ENDS = ("run.succeeded", "run.failed", "run.cancelled", "run.timed_out")

KEPT = 20_000
# How often a wait for a run's end reads the database besides hearing the announcements of ends (which
# a connection down for a moment may miss): a fallback, so seldom.
STORED_READ_S = 5.0
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


async def follow_announced(nc: NATS) -> None:
    """Hear every core-api's announcements of runs' ends (one core subscription per end, no consumer):
    a request or stream waiting on a run another core-api ended is woken without reading the database."""

    async def on_msg(msg: Msg) -> None:
        try:
            run_id = msgspec.json.decode(decode_raw(msg.data).data, type=RunChanged).run_id
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:  # not ours to judge: ignored
            log.debug("an announcement of a run's end that does not decode: %s", exc)
            return
        stored(run_id)

    for type_ in ANNOUNCED_ENDS:
        await nc.subscribe(spec(type_).subject, cb=on_msg)

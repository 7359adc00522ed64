"""The runs whose end this process stored lately: a run's event stream, waiting to end until its run's
end is stored, asks here first and reads the database only now and then (another core-api may have
stored it). Bounded: the oldest are forgotten first."""

from collections import OrderedDict

KEPT = 20_000
_ended: OrderedDict[str, None] = OrderedDict()


def stored(run_id: str) -> None:
    """Called once a run's end is stored."""
    _ended[run_id] = None
    _ended.move_to_end(run_id)
    while len(_ended) > KEPT:
        _ended.popitem(last=False)


def known_ended(run_id: str) -> bool:
    return run_id in _ended

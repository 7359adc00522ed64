"""Runs this core-api knows: their events are accepted without looking them up."""

import logging

from nexus.db.cache import cached_get
from nexus.db.documents import Run

log = logging.getLogger("nexus.core_api.ingest")
_known_runs: set[str] = set()  # runs are never deleted: one found once stays known


def remember(run_id: str) -> None:
    """A run this process just stored: its events need no lookup to be accepted."""
    if len(_known_runs) > 100_000:
        _known_runs.clear()
    _known_runs.add(run_id)


async def known(run_id: str, type_: str) -> bool:
    if run_id in _known_runs:
        return True
    if await cached_get(Run, run_id) is None:
        # Not a run of this core-api's database (another deployment sharing the bus, or a
        # runner started by hand): nothing here may change because of it.
        log.debug("ignoring %s for unknown run %s", type_, run_id)
        return False
    remember(run_id)
    return True

"""Runs this core-api knows: their events are accepted without looking them up."""

import logging

from nexus.db.cache import cached_get
from nexus.db.documents import Run

log = logging.getLogger("nexus.core_api.ingest")
_known_runs: set[str] = set()  # runs are never deleted: one found once stays known
# A run's agent never changes: kept per run, so a model call's metric does not read the run (every
# write to `runs` — a heartbeat's time — empties the read cache's copies of runs).
_agents: dict[str, str] = {}


def remember(run_id: str, agent_id: str | None = None) -> None:
    """A run this process just stored (with its agent): its events need no lookup to be accepted, and
    its model calls none to be counted by agent."""
    if len(_known_runs) > 100_000:
        _known_runs.clear()
    _known_runs.add(run_id)
    if agent_id is not None:
        if len(_agents) > 100_000:
            _agents.clear()
        _agents[run_id] = agent_id


async def agent_of(run_id: str) -> str | None:
    if run_id not in _agents:
        run = await cached_get(Run, run_id)
        if run is None:
            return None
        remember(run_id, run.agent_id)
    return _agents[run_id]


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

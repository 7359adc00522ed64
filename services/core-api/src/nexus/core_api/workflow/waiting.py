"""Waiting for a run's end inside a request (`?wait_s=`): an outside client learns it in one request,
with no event stream and no polling. Answered the moment this process stores the end or hears a core-api
announce it (its task moved by then); the database is read every STORED_READ_S besides, in case an
announcement was missed."""

import asyncio
from typing import Annotated

from litestar.params import QueryParameter

from nexus.core_api.workflow import ends
from nexus.core_api.workflow.ends import STORED_READ_S
from nexus.db.writes import written
from nexus.db.documents import Run
from nexus.domain.runs import RUN_FINAL, RunStatus

# The longest a request may wait (a client wanting longer asks again).
MAX_WAIT_S = 60.0

WaitS = Annotated[
    float,
    QueryParameter(
        ge=0,
        le=MAX_WAIT_S,
        description="wait up to this many seconds for the run to end (its end stored, its task moved); "
        "answered as things are then, ended or not",
    ),
]


async def _as_stored(run: Run) -> Run:
    """The ended run: as this process wrote it, when it stored the end (no read); else as stored."""
    kept: Run | None = written.peek(Run, run.id)
    if kept is not None and ended(kept):
        return kept
    return await Run.get(run.id) or run


def ended(run: Run) -> bool:
    return RunStatus(run.status) in RUN_FINAL


async def when_ended(run: Run, wait_s: float) -> Run:
    """The run once its end is stored, or as it is after `wait_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while not ended(run) and (left := deadline - loop.time()) > 0:
        if await ends.until_stored(run.id, min(left, STORED_READ_S)):
            return await _as_stored(run)
        run = await Run.get(run.id) or run  # an announcement missed: the database says
    return run

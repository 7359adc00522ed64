"""Waiting for a run's end inside a request (`?wait_s=`): an outside client learns it in one request,
with no event stream and no polling. Answered the moment this process stores the end (its task moved
by then); an end another core-api stored is read from the database every STORED_READ_S meanwhile."""

import asyncio
from typing import Annotated

from litestar.params import QueryParameter

from nexus.core_api.runs.stream import STORED_READ_S
from nexus.core_api.workflow import ends
from nexus.db.cache import cached_get
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


def ended(run: Run) -> bool:
    return RunStatus(run.status) in RUN_FINAL


async def when_ended(run: Run, wait_s: float) -> Run:
    """The run once its end is stored, or as it is after `wait_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while not ended(run) and (left := deadline - loop.time()) > 0:
        if await ends.until_stored(run.id, min(left, STORED_READ_S)):
            return await cached_get(Run, run.id) or run  # stored by this process: its cache holds it
        run = await Run.get(run.id) or run  # another core-api may have stored it
    return run

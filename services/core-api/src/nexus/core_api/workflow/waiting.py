"""Waiting for a run's end inside a request (`?wait_s=`): an outside client learns it in one request,
with no event stream and no polling. Answered the moment this process stores the end or hears a core-api
announce it (its task moved by then); the database is read every STORED_READ_S besides, in case an
announcement was missed."""

import asyncio
from collections.abc import Callable
from typing import Annotated, TypeVar

from litestar.params import QueryParameter

from nexus.core_api.workflow import ends
from nexus.core_api.workflow.ends import STORED_READ_S
from nexus.db.cache import cached_get
from nexus.db.documents import Run, Task
from nexus.db.writes import written
from nexus.domain.runs import RUN_FINAL, RunStatus
from nexus.domain.tasks import TASK_FINAL, TaskStatus

D = TypeVar("D", Run, Task)

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


async def _settled(cls: type[D], doc_id: str, settled: Callable[[D], bool]) -> D | None:
    """The document as this process last wrote it when that copy is settled (no read); else as stored."""
    kept: D | None = written.peek(cls, doc_id)
    return kept if kept is not None and settled(kept) else await cls.get(doc_id)


def ended(run: Run) -> bool:
    return RunStatus(run.status) in RUN_FINAL


async def when_ended(run: Run, wait_s: float) -> Run:
    """The run once its end is stored, or as it is after `wait_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while not ended(run) and (left := deadline - loop.time()) > 0:
        if await ends.until_stored(run.id, min(left, STORED_READ_S)):
            return await _settled(Run, run.id, ended) or run
        run = await Run.get(run.id) or run  # an announcement missed: the database says
    return run


async def task_when_its_run_ended(task: Task, wait_s: float) -> Task:
    """The task once the run it started has ended (it moves with it), or as it is after `wait_s`."""
    if task.current_run_id is None:
        return task
    run = written.peek(Run, task.current_run_id) or await cached_get(Run, task.current_run_id)
    if run is None or not ended(await when_ended(run, wait_s)):
        return task
    return await _settled(Task, task.id, lambda t: TaskStatus(t.status) in TASK_FINAL) or task

"""A run's status and attempt, read without the rest of the document.

The worker asks this of every launch it cannot judge from the bus (is it stale?). FerretDB converts
every field it returns and the caller decodes and validates each one, so reading the two fields a
launch needs costs less than reading the run (a run stored before configs were kept apart still
carries its whole config inline)."""

from pydantic import BaseModel

from nexus.db.documents import Run


class RunState(BaseModel):
    status: str
    attempt: int


async def run_state(run_id: str) -> RunState | None:
    """The run's status and attempt; None when there is no such run."""
    return await Run.find_one(Run.id == run_id, projection_model=RunState)

"""A run's config, kept apart from the run.

The config (the assembled agent: prompt, skills, memory, tools, permissions, limits…) is most of a
run document's size and is needed only to launch an attempt, to retry the run and to show one run.
FerretDB converts every document it reads or updates whole (about a millisecond of CPU for a run
with its config), so it lives in its own insert-only document, `run_configs`, keyed by the run's
id; the run keeps what lists, transitions and the board read.

Runs stored before this keep their config inline (`config` on the run document): `config_of` reads
either shape."""

import asyncio

from nexus.db.cache import cached_value
from nexus.db.documents import Run, RunConfigRecord
from nexus.db.group import insert_grouped
from nexus.domain.json_types import JsonObject


async def store_run(run: Run, config: JsonObject) -> None:
    """The run and its config, each written with the inserts concurrent callers make (group commit),
    both at once: one round trip on the dispatch path, not two. Both are refused or stored together but
    for a connection lost between the two commands; a run left without its config then reads with none,
    is refused a retry, and, still queued, is ended failed by core-api's requeue sweep (a config left
    without its run is an orphan nobody reads)."""
    await asyncio.gather(insert_grouped(RunConfigRecord(id=run.id, config=config)), insert_grouped(run))


async def config_of(run_id: str) -> JsonObject | None:
    """The run's config as stored: its own document, or — for a run stored before configs were kept
    apart — the run's inline `config`. None: no such run (or one stored without a config). A config is
    never changed once stored, so it is read through the cache: shared, never to be mutated."""
    return await cached_value(RunConfigRecord, run_id, lambda: _config_of(run_id), keep=lambda c: c is not None)


async def _config_of(run_id: str) -> JsonObject | None:
    record = await RunConfigRecord.get_pymongo_collection().find_one({"_id": run_id})
    if record is not None:
        config: JsonObject = record["config"]
        return config
    old = await Run.get_pymongo_collection().find_one({"_id": run_id}, {"config": 1})
    return None if old is None else old.get("config")

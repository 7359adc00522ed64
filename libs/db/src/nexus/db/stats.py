"""What this process asks of the database: every command counted and timed by collection.

A pymongo CommandListener, installed on every client `connect_db` makes, so core-api, the worker
and board-sync each expose `nexus_db_commands_total{command,collection}` and
`nexus_db_command_seconds_total{command,collection}` (and the documents reads returned,
`nexus_db_documents_returned_total{collection}`) on /metrics. Divided by the runs of a
benchmark these say how many round trips and writes one run costs, and where the database's
time goes (bench.throughput reads them)."""

import time

from prometheus_client import Counter
from pymongo import monitoring

COMMANDS = Counter(
    "nexus_db_commands_total", "Database commands sent, by command and collection", ["command", "collection", "outcome"]
)
# What FerretDB v1 costs most is handing documents over (it reads and converts each whole document,
# whatever the projection): a read's cost follows this more than the number of commands.
DOCUMENTS = Counter(
    "nexus_db_documents_returned_total",
    "Documents the database returned to reads (find, getMore), by collection",
    ["collection"],
)
SECONDS = Counter(
    "nexus_db_command_seconds_total", "Seconds spent waiting for database commands", ["command", "collection"]
)
# Commands whose first field is not a collection name.
_NO_COLLECTION = frozenset(
    {
        "ping",
        "hello",
        "ismaster",
        "isMaster",
        "buildInfo",
        "endSessions",
        "killCursors",
        "saslStart",
        "saslContinue",
        "getMore",
        "listCollections",
        "listDatabases",
        "dropDatabase",
    }
)


class CommandStats(monitoring.CommandListener):
    def __init__(self) -> None:
        self._open: dict[tuple[object, int], tuple[str, str, float]] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        target = event.command.get(name)
        collection = target if isinstance(target, str) and name not in _NO_COLLECTION else ""
        if name == "getMore":
            collection = str(event.command.get("collection", ""))
        if len(self._open) > 10_000:  # replies that never came (a dropped connection): forget them
            self._open.clear()
        self._open[(event.connection_id, event.request_id)] = (name, collection, time.perf_counter())

    def _done(self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent, outcome: str) -> None:
        name, collection, t0 = self._open.pop(
            (event.connection_id, event.request_id), (event.command_name, "", time.perf_counter())
        )
        COMMANDS.labels(name, collection, outcome).inc()
        SECONDS.labels(name, collection).inc(time.perf_counter() - t0)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor") if event.command_name in ("find", "getMore") else None
        if isinstance(cursor, dict):
            batch = cursor.get("firstBatch", cursor.get("nextBatch"))
            opened = self._open.get((event.connection_id, event.request_id))
            if isinstance(batch, list) and opened:
                DOCUMENTS.labels(opened[1]).inc(len(batch))
        self._done(event, "ok")

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._done(event, "error")

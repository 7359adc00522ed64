"""What a shape asked of PostgreSQL behind FerretDB, per run: commits, rows written, WAL records, bytes and
full-page images, WAL flushes (pg_stat_database, pg_stat_wal); with NEXUS_PG_STATEMENTS=1 (the cluster started
with pg_stat_statements) also each statement's calls, execution and planning time, rows and WAL bytes.
A backend reports its counters at most once a second (more rarely when idle), so these lag the shape a
little; `wal_bytes_by_lsn` (the WAL position's move) does not."""

import os

from nexus.dev.servers import Managed

COUNTERS = """
SELECT d.xact_commit, d.xact_rollback, d.tup_inserted, d.tup_updated, d.tup_deleted, d.tup_fetched,
       d.blks_hit + d.blks_read, w.wal_records, w.wal_fpi, w.wal_bytes, w.wal_write, w.wal_sync,
       pg_current_wal_lsn() - '0/0'
  FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = current_database()
"""
NAMES = (
    "commits",
    "rollbacks",
    "rows_inserted",
    "rows_updated",
    "rows_deleted",
    "rows_fetched",
    "blocks_touched",
    "wal_records",
    "wal_full_page_images",
    "wal_bytes",
    "wal_writes",
    "wal_flushes",
    "wal_bytes_by_lsn",
)
STATEMENTS = """
SELECT calls, total_exec_time, total_plan_time, rows, wal_bytes, left(regexp_replace(query, '\\s+', ' ', 'g'), 110)
  FROM pg_stat_statements WHERE calls > 0
"""


def postgres_of(servers: list[Managed]) -> Managed | None:
    return next((b for s in servers for b in s.backing if b.name == "postgres"), None)


def want_statements() -> bool:
    return bool(os.environ.get("NEXUS_PG_STATEMENTS"))


def snapshot(server: Managed | None) -> dict:
    """The cluster's counters now (both views are cumulative; a shape's share is the difference)."""
    if server is None:
        return {}
    from nexus.dev.postgres import query

    out: dict = {"counters": dict(zip(NAMES, (float(v) for v in query(server, COUNTERS)[0]), strict=True))}
    if want_statements():
        out["statements"] = {
            "|".join(row[5:]): [float(v) for v in row[:5]] for row in query(server, STATEMENTS)
        }  # same text, different users: the last one wins (FerretDB uses one)
    return out


def per_run(before: dict, after: dict, runs: int) -> dict:
    """The difference per run; statements as calls, µs executing, µs planning, rows and WAL bytes per run, the
    costliest first."""
    if not after:
        return {}
    n = max(runs, 1)
    counters = after["counters"]
    out: dict = {k: round((v - before.get("counters", {}).get(k, 0.0)) / n, 2) for k, v in counters.items()}
    if "statements" in after:
        rows = []
        for text, now in after["statements"].items():
            was = before.get("statements", {}).get(text, [0.0] * len(now))
            d = [a - b for a, b in zip(now, was, strict=True)]
            if d[0] > 0:
                rows.append((d[1] + d[2], text, d))
        out["statements"] = [
            {
                "statement": text,
                "calls": round(d[0] / n, 2),
                "exec_us": round(1000 * d[1] / n),
                "plan_us": round(1000 * d[2] / n),
                "rows": round(d[3] / n, 2),
                "wal_bytes": round(d[4] / n),
            }
            for _, text, d in sorted(rows, reverse=True)[:25]
        ]
    return out

"""A private PostgreSQL cluster for FerretDB's PostgreSQL handler (Debian's PostgreSQL, started as a
child process on a free port, trust authentication on 127.0.0.1 only).

Two settings make FerretDB v1's pushed-down filters use indexes:
- FerretDB pushes an equality filter down as `_jsonb -> $1 @> $2` and creates its own indexes as
  btree on `(_jsonb -> 'field')`; a btree cannot answer `@>`. An event trigger (below) gives every
  such btree index a GIN companion on the same expression, which can. Without GIN's pending list
  (fastupdate off): with it, every lookup scans the entries not yet merged, which grows with inserts.
  A non-unique btree then answers nothing FerretDB asks, yet every insert and update maintained it
  (a run's update wrote 12 index entries, 5 of them for such btrees): it is replaced by its first
  field's GIN index under its own name. Unique btrees stay (they enforce uniqueness; `_id`'s also
  answers FerretDB's `UPDATE ... WHERE _jsonb -> '_id' = $1`).
- The field name arrives as a parameter; an expression index matches only a constant, so the
  cluster plans every statement with its parameter values (plan_cache_mode=force_custom_plan).
- A sequential scan is taken only where no index matches (enable_seqscan=off); no query is JIT-compiled
  (jit=off: the disabled scan's price would make a one-row read compile for tens of milliseconds).
Sorts and ranges are never pushed down by FerretDB v1: list pages avoid them (nexus.db.paging)."""

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from nexus.dev.servers import Managed, _spawn, free_port, wait_port

USER = "nexus"
DATABASE = "postgres"

GIN_COMPANIONS = r"""
CREATE OR REPLACE FUNCTION nexus_gin_of(tbl regclass, expr text) RETURNS name LANGUAGE sql AS $$
  SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_am a ON a.oid = c.relam
   WHERE x.indrelid = tbl AND a.amname = 'gin'
     AND split_part(pg_get_indexdef(x.indexrelid, 1, false), ' jsonb_path_ops', 1) = expr
   ORDER BY c.relname LIKE '%\_expr\_idx%' DESC LIMIT 1
$$;
CREATE OR REPLACE FUNCTION nexus_lean_index(ix oid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  idx record;
  expr text;
  gin name;
  i int;
BEGIN
  SELECT x.indrelid::regclass AS tbl, x.indnatts AS n, a.amname AS am, x.indisunique AS uniq,
         c.relname AS name, n.nspname AS nsp
    INTO idx
    FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_am a ON a.oid = c.relam
    JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE x.indexrelid = ix;
  IF idx.am IS DISTINCT FROM 'btree' THEN
    RETURN;
  END IF;
  FOR i IN 1..idx.n LOOP
    expr := pg_get_indexdef(ix, i, false);
    CONTINUE WHEN left(expr, 11) <> '((_jsonb ->' OR nexus_gin_of(idx.tbl, expr) IS NOT NULL;
    EXECUTE format('CREATE INDEX ON %s USING gin (%s jsonb_path_ops) WITH (fastupdate = off)', idx.tbl, expr);
  END LOOP;
  expr := pg_get_indexdef(ix, 1, false);
  IF idx.uniq OR left(expr, 11) <> '((_jsonb ->' THEN
    RETURN;  -- a unique btree enforces its uniqueness (and answers FerretDB's `_id =` of updates): it stays
  END IF;
  -- A non-unique btree answers nothing FerretDB asks (its filters are `@>`), yet every insert and
  -- update maintains it: the GIN index of its first field takes its name (so FerretDB's dropIndexes
  -- still finds one), and the btree goes.
  gin := nexus_gin_of(idx.tbl, expr);
  EXECUTE format('DROP INDEX %I.%I', idx.nsp, idx.name);
  IF gin LIKE '%\_expr\_idx%' THEN
    EXECUTE format('ALTER INDEX %I.%I RENAME TO %I', idx.nsp, gin, idx.name);
  ELSE
    EXECUTE format('CREATE INDEX %I ON %s USING gin (%s jsonb_path_ops) WITH (fastupdate = off)',
                   idx.name, idx.tbl, expr);
  END IF;
END $$;
CREATE OR REPLACE FUNCTION nexus_gin_companions() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE
  cmd record;
BEGIN
  FOR cmd IN SELECT objid FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE INDEX' LOOP
    PERFORM nexus_lean_index(cmd.objid);
  END LOOP;
END $$;
DROP EVENT TRIGGER IF EXISTS nexus_gin_companions;
CREATE EVENT TRIGGER nexus_gin_companions ON ddl_command_end WHEN TAG IN ('CREATE INDEX')
  EXECUTE FUNCTION nexus_gin_companions();
-- Indexes made before this version of the trigger (a cluster kept across starts) are made lean too.
SELECT nexus_lean_index(x.indexrelid)
  FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_am a ON a.oid = c.relam
 WHERE a.amname = 'btree' AND left(pg_get_indexdef(x.indexrelid, 1, false), 11) = '((_jsonb ->';
"""


STATEMENTS_ON = ["-c", "shared_preload_libraries=pg_stat_statements", "-c", "pg_stat_statements.track_planning=on"]
STATEMENTS_SQL = "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;"


def bin_dir() -> Path | None:
    """Debian's PostgreSQL server binaries (the newest installed major), or those on PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("postgres")
    return Path(found).resolve().parent if found else None


def available() -> bool:
    b = bin_dir()
    return b is not None and (b / "initdb").exists() and shutil.which("psql") is not None and _ferretdb_has_postgresql()


_has_pg: bool | None = None


def _ferretdb_has_postgresql() -> bool:
    """A FerretDB built without its PostgreSQL handler (an older install) falls back to SQLite."""
    global _has_pg
    if _has_pg is None:
        from nexus.dev.servers import find_tool

        try:
            out = subprocess.run([find_tool("ferretdb"), "--help"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        _has_pg = "--postgresql-url" in out
    return _has_pg


def _as_postgres() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as Debian's `postgres` account."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


def _cluster_dir(link: Path) -> tuple[Path, bool]:
    """Where the cluster lives, and whether it is throw-away. The postgres account cannot enter a
    root-only directory (a test's temp dir, a home), so as root the cluster lives in a directory of
    its own and `link` points there; one under the temp dir goes away with its server."""
    if os.geteuid() != 0:
        return link, False
    if link.is_symlink():
        return link.resolve(), str(link.resolve()).startswith(tempfile.gettempdir())
    target = link.resolve()
    throwaway = str(target).startswith(tempfile.gettempdir() + os.sep)
    base = Path(tempfile.gettempdir()) if throwaway else Path("/var/lib/nexus")
    real = base / f"nexus-pg-{hashlib.sha1(str(target).encode()).hexdigest()[:16]}"
    real.mkdir(parents=True, exist_ok=True)
    shutil.chown(real, "postgres", "postgres")
    real.chmod(0o700)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(real)
    return real, throwaway


def _psql(port: int, sql: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port), "-U", USER, "-d", DATABASE],
        input=sql,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
    )


def start_postgres(
    data_dir: Path, port: int | None = None, log_path: Path | None = None, timeout_s: float = 60.0
) -> Managed:
    b = bin_dir()
    if b is None:
        raise FileNotFoundError("PostgreSQL is not installed; run scripts/install-tools.sh")
    port = port or free_port()
    cluster, throwaway = _cluster_dir(data_dir)
    fresh = not (cluster / "PG_VERSION").exists()
    if fresh:
        subprocess.run(
            [
                *_as_postgres(),
                str(b / "initdb"),
                "-D",
                str(cluster),
                "-U",
                USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    args = [
        *_as_postgres(),
        str(b / "postgres"),
        "-D",
        str(cluster),
        "-p",
        str(port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_directories=",
        "-c",
        "plan_cache_mode=force_custom_plan",
        # Without statistics (a fresh or freshly loaded table) the planner prices a sequential scan as
        # cheap, not knowing each row's JSON must be unpacked: where an index matches, always use it.
        "-c",
        "enable_seqscan=off",
        # That price (a disabled scan costs 10^10) is over the JIT threshold: every query on a collection
        # without a matching index (a handful of agents) would be compiled first, 25-75 ms each time.
        "-c",
        "jit=off",
        # A commit is answered once its WAL is written and flushed (the default, said because it was once off):
        # FerretDB answers a write then, and core-api acknowledges what it ingested. An asynchronous commit
        # lived in PostgreSQL's memory for up to 600 ms, and a kill of PostgreSQL took it, and the event, along.
        "-c",
        "synchronous_commit=on",
        # A document over ~2 kB (a chunk of a run's events) is compressed as it is stored: lz4 compresses
        # it several times faster than pglz, the default, to about the same size (pglz_compress was ~5 %
        # of the cluster's CPU under the trivial-run bench). Values stored before read as they were.
        "-c",
        "default_toast_compression=lz4",
        "-c",
        "shared_buffers=64MB",
        "-c",
        "max_connections=200",
        # What each statement costs, for a measurement (bench.throughput --pg-statements): off by default.
        *(STATEMENTS_ON if os.environ.get("NEXUS_PG_STATEMENTS") else []),
    ]
    proc, log = _spawn(args, log_path)
    managed = Managed(
        "postgres", proc, f"postgres://{USER}@127.0.0.1:{port}/{DATABASE}", log, stop_signal=signal.SIGINT
    )
    if throwaway:

        def forget() -> None:
            shutil.rmtree(cluster, ignore_errors=True)
            data_dir.unlink(missing_ok=True)

        managed.on_stopped.append(forget)
    try:
        wait_port("127.0.0.1", port, timeout_s=timeout_s, proc=proc)
        deadline = time.monotonic() + timeout_s
        while True:  # listening is not yet accepting: wait out recovery/startup
            res = _psql(port, GIN_COMPANIONS + (STATEMENTS_SQL if os.environ.get("NEXUS_PG_STATEMENTS") else ""))
            if res.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on {port} did not start: {res.stderr.strip()}")
            time.sleep(0.1)
    except BaseException:
        managed.stop()
        raise
    return managed


def vacuum_analyze(server: Managed, timeout_s: float = 3600.0) -> None:
    """VACUUM ANALYZE the whole cluster: what autovacuum does over time, done at once (after a bulk load)."""
    res = _psql(port_of(server), "VACUUM (ANALYZE);", timeout_s=timeout_s)
    if res.returncode != 0:
        raise RuntimeError(f"VACUUM failed: {res.stderr.strip()}")


def port_of(server: Managed) -> int:
    return int(server.url.rsplit(":", 1)[1].split("/")[0])


def query(server: Managed, sql: str) -> list[list[str]]:
    """Rows of a read-only query, as text split at `|` (a measurement's counters: put free text last)."""
    res = _psql(port_of(server), "\\pset tuples_only on\n\\pset format unaligned\n" + sql + ";\n", timeout_s=60.0)
    if res.returncode != 0:
        raise RuntimeError(res.stderr.strip())
    return [line.split("|") for line in res.stdout.splitlines() if line]

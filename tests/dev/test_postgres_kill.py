"""A commit PostgreSQL acknowledged survives a kill of PostgreSQL: FerretDB answers a write once its
transaction committed, and core-api then acknowledges what it ingested, so a commit held only in
PostgreSQL's memory (an asynchronous commit, not yet written out) would be an event lost for good."""

import os
import signal

import pytest

from nexus.dev import postgres

pytestmark = pytest.mark.infra


def test_every_acknowledged_commit_survives_a_kill_of_postgresql(tmp_path) -> None:
    if not postgres.available():
        pytest.skip("PostgreSQL is not installed")
    pg = postgres.start_postgres(tmp_path / "pg")
    port = int(pg.url.rsplit(":", 1)[1].split("/")[0])
    try:
        assert postgres._psql(port, "CREATE TABLE acked (n int)").returncode == 0
        # One commit per statement, each acknowledged to psql, the kill right after the last one.
        rows = 200
        done = postgres._psql(port, "".join(f"INSERT INTO acked VALUES ({n});\n" for n in range(rows)))
        assert done.returncode == 0, done.stderr
        os.killpg(pg.proc.pid, signal.SIGKILL)  # the postmaster and every backend, as a crash takes them
        pg.proc.wait()
        pg = postgres.start_postgres(tmp_path / "pg", port=port)
        kept = postgres._psql(port, "\\pset tuples_only on\nSELECT count(*) FROM acked;")
        assert kept.returncode == 0, kept.stderr
        assert int(kept.stdout.split()[-1]) == rows
    finally:
        pg.stop()

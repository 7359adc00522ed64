"""The dev FerretDB collects garbage after its heap grew tenfold (GOGC=1000) under a soft memory limit,
not at Go's default: at the default a tenth of its CPU per command went to collection (docs/throughput.md).
An operator's own GOGC / GOMEMLIMIT still wins."""

import shutil
import tempfile
from pathlib import Path

import pytest

from nexus.dev.servers import start_ferretdb

pytestmark = pytest.mark.infra


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.mark.parametrize("given", [{}, {"GOGC": "150"}])
def test_ferretdb_runs_with_a_lazier_collector_unless_told_otherwise(monkeypatch, given: dict[str, str]) -> None:
    monkeypatch.delenv("GOGC", raising=False)
    monkeypatch.delenv("GOMEMLIMIT", raising=False)
    for k, v in given.items():
        monkeypatch.setenv(k, v)
    home = Path(tempfile.mkdtemp(prefix="nexus-ferretdb-gc-"))
    server = start_ferretdb(home / "ferretdb", handler="sqlite")
    try:
        env = _environ(server.proc.pid)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    assert env.get("GOGC") == given.get("GOGC", "1000")
    assert env.get("GOMEMLIMIT") == "512MiB"

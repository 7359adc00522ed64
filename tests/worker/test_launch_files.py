"""The small files a launch writes: exactly the bytes given, an older file's longer content cut, the mode
asked for (less the umask) on a new file; the run's directory is new only the first time."""

import os
from pathlib import Path

from nexus.worker.runtimes.files import write_file
from nexus.worker.runtimes.local import _made


def test_a_file_holds_exactly_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "runner.pid"
    write_file(path, b"123456")
    write_file(path, b"42")  # a shorter value replaces it whole
    assert path.read_bytes() == b"42"
    big = os.urandom(1 << 20)
    write_file(path, big)
    assert path.read_bytes() == big


def test_a_new_file_gets_the_mode_asked_for(tmp_path: Path) -> None:
    secret = tmp_path / "runner.env"
    write_file(secret, b"{}", 0o600)
    assert secret.stat().st_mode & 0o777 == 0o600


def test_a_directory_is_new_only_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "missing-root" / "run_1"
    assert _made(run_dir)  # its parent was missing too
    assert not _made(run_dir)
    assert run_dir.is_dir()

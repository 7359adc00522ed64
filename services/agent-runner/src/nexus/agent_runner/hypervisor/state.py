"""The session state file: the whole SessionState as JSON, rewritten atomically after every
change (temp file + fsync + os.replace), so a crashed run can be recovered from disk."""

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from nexus.domain.sessions import SessionState


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_state(path: Path, session: SessionState) -> None:
    write_json(path, session)


def write_json(path: Path, obj: object) -> None:
    """Replace `path` with the JSON of `obj` atomically (readers see the old or the new file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    data = msgspec.json.encode(obj)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_state(path: Path) -> SessionState:
    return msgspec.json.decode(path.read_bytes(), type=SessionState)

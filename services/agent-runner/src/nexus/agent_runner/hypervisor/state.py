"""The session state file: the whole SessionState as JSON, rewritten atomically after every
change (temp file + os.replace), so a crashed runner process leaves a whole, current file behind.

The runner writes it without an fsync per change (that cost 5–7 ms a call): a process crash
loses nothing the kernel already has, and the durable record of every change is the run's event
stream in JetStream. The file is fsynced when the session ends, and on every write by
nexus-agent-tool, whose separate invocations have nothing else to remember them by."""

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from nexus.domain.sessions import SessionState


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_state(path: Path, session: SessionState, *, durable: bool = True) -> None:
    write_json(path, session, durable=durable)


def write_json(path: Path, obj: object, *, durable: bool = True) -> None:
    """Replace `path` with the JSON of `obj` atomically (readers see the old or the new file);
    `durable`: fsync the data before the rename, so it also survives the machine."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    data = msgspec.json.encode(obj)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_state(path: Path) -> SessionState:
    return msgspec.json.decode(path.read_bytes(), type=SessionState)

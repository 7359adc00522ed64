"""The session state file: the whole SessionState as JSON, written atomically (temp file + os.replace)
when the session is first recorded and when it ends; each change in between is appended to the file's
journal (`.<name>.changes`, a line of JSON each), so a crashed runner process leaves the file and its
journal behind, which `read_state` reads as one current state. Rewriting the whole file after every
change cost a ledger of n changes n^2/2 changes' worth of writes (1 MB of ledger, 600 MB of writes).

The runner writes without an fsync per change (that cost 5–7 ms a call): a process crash
loses nothing the kernel already has, and the durable record of every change is the run's event
stream in JetStream. The file is fsynced when the session ends, and on every write by
nexus-agent-tool, whose separate invocations have nothing else to remember them by."""

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from nexus.domain.sessions import SessionChange, SessionState


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def journal(path: Path) -> Path:
    return path.with_name(f".{path.name}.changes")


def write_state(path: Path, session: SessionState, *, durable: bool = True) -> None:
    """The whole state; the journal, whose changes it now holds, is removed."""
    write_json(path, session, durable=durable)
    journal(path).unlink(missing_ok=True)


def append_change(path: Path, change: SessionChange) -> None:
    """One change more, after those the state file at `path` and its journal hold."""
    fd = os.open(journal(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(msgspec.json.encode(change) + b"\n")
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


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
    """The state file with the changes its journal holds past it (a line cut by a crash ends them)."""
    state = msgspec.json.decode(path.read_bytes(), type=SessionState)
    try:
        lines = journal(path).read_bytes().splitlines()
    except FileNotFoundError:
        return state
    for line in lines:
        try:
            change = _CHANGE.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            break
        if change.seq >= len(state.changes):  # a journal the state was written past holds nothing new
            state.changes.append(change)
    return state


_CHANGE: msgspec.json.Decoder[SessionChange] = msgspec.json.Decoder(SessionChange)

"""search_text's view of the workspace: a private, masked copy.

The pattern is matched against files whose secret values were already replaced by `${secret:NAME}`
(SecretBox.mask_bytes), so a match can neither show a value nor answer "does the value start with
...?" (no regex oracle). The copy is read path-safely (no symlink followed, hard-linked files and
`.git` skipped) and grep only ever sees the copy: masked files are written, files holding no secret
are hard-linked (the inode just checked). Measured by bench/runner/git_tools.py."""

import os
import stat
from pathlib import Path

from nexus.agent_runner.hypervisor.errors import Refused
from nexus.agent_runner.hypervisor.paths import Workspace
from nexus.agent_runner.hypervisor.secrets import SecretBox

MAX_FILE_BYTES = 4 << 20
MAX_TOTAL_BYTES = 64 << 20
MAX_DEPTH = 128  # directories deeper are not searched (os.fwalk recurses: a deeper tree would be a RecursionError)


def _read(dir_fd: int, name: str) -> bytes | None:
    """A regular, singly-linked file's content, or None."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1 or st.st_size > MAX_FILE_BYTES:
            return None
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if (os.fstat(fd).st_ino, os.fstat(fd).st_dev) != (st.st_ino, st.st_dev):
            return None
        return os.read(fd, MAX_FILE_BYTES + 1)[:MAX_FILE_BYTES]
    finally:
        os.close(fd)


def masked_copy(ws: Workspace, rel: str, into: Path, secrets: SecretBox) -> int:
    """Copy the files under `rel` (a file or a directory) into `into/<rel>`, masked. Returns how many
    files were left out (too large, hard-linked, over the total; a directory past MAX_DEPTH counts one)."""
    skipped, total = 0, 0
    if rel != "." and _is_file(ws, rel):
        try:
            data, size = ws.read_bytes(rel, MAX_FILE_BYTES)
        except Refused:
            return 1
        if size > len(data):
            return 1
        _put(into / secrets.mask(rel), secrets.mask_bytes(data))
        return 0
    top = ws.open_dir(rel)
    try:
        for dirpath, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            dirnames[:] = sorted(d for d in dirnames if d.casefold() != ".git")
            if dirpath.count(os.sep) >= MAX_DEPTH and dirnames:
                skipped += len(dirnames)  # each a tree left out, counted as one
                dirnames[:] = []
            for name in sorted(filenames):
                found = _read(dir_fd, name)
                if found is None or total + len(found) > MAX_TOTAL_BYTES:
                    skipped += _countable(dir_fd, name)
                    continue
                total += len(found)
                path = secrets.mask(os.path.normpath(os.path.join(rel, dirpath, name)))
                masked = secrets.mask_bytes(found)
                if masked is not found or not _link(dir_fd, name, into / path):
                    _put(into / path, masked)
    finally:
        os.close(top)
    return skipped


def _is_file(ws: Workspace, rel: str) -> bool:
    try:
        return ws.mode(rel) is not None
    except Refused:  # a directory (or not a regular file): searched as a tree
        return False


def _countable(dir_fd: int, name: str) -> int:
    """1 for a regular file that was left out (symlinks, devices and FIFOs are not files to search)."""
    try:
        return 1 if stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode) else 0
    except OSError:
        return 0


def _link(dir_fd: int, name: str, target: Path) -> bool:
    """A file without secrets is hard-linked into the copy (much cheaper than writing it; the same
    checked inode, and the copy is gone before any command can run). False when linking is refused."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(name, target, src_dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def format_matches(output: str, max_lines: int, max_chars: int) -> list[str]:
    """grep --null -n output ("path\\0lineno:text") as sorted "path:lineno:text" lines, each cut."""
    matches = []
    for line in output.splitlines():
        path, _, rest = line.partition("\0")
        number, _, text = rest.partition(":")
        if number.isdigit():
            matches.append((path.removeprefix("./"), int(number), text))
    matches.sort()
    shown = [f"{path}:{number}:{text}"[:max_chars] for path, number, text in matches[:max_lines]]
    if len(matches) > max_lines:
        shown.append("[more matches not shown; narrow the pattern or the path]")
    return shown

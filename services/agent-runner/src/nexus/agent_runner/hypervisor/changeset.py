"""What a command changed in the workspace, whatever it named: the work tree is read before and after
each command (every entry's inode, type, size, mode and change time, never following a link) and
the difference is recorded. A program can write files its arguments never name (`gzip -S`, `csplit
-b`, `tar x`, `cp -r`, `sed -i.bak`, `make`, any interpreter), so the command line alone cannot be
the record. A file's change time (ctime) is set by the kernel on every write, rename or chmod and
cannot be set back by the writer, so a change cannot hide behind a restored mtime.

The walk keeps its own stack (a tree thousands of levels deep is read without recursion), keeps one
number per entry (a hash of its status) and stops at `MAX_ENTRIES` or `MAX_NAME_BYTES`, or at a
directory it cannot read (a path longer than the kernel takes): such a workspace is not tracked, and
only `rm` runs in it (command_tools), which names what it deletes."""

import hashlib
import os
import re
import stat
from dataclasses import dataclass

MAX_ENTRIES = 500_000
# The names the walk keeps, all together: 150,000 files at the end of 4,000-byte paths are 600 MB of names
# in each of the two walks around a command (and in the disk budget's), in the runner's memory.
MAX_NAME_BYTES = 64 << 20
MAX_ITEMISED = 200  # per command: the ledger gets one change per file up to this many, and the count
_CHUNK = 1 << 20
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC  # never a link, never a wait
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Snapshot:
    entries: dict[str, int]  # path: hash of (inode, type and mode, size, mtime_ns, ctime_ns)
    sizes: dict[str, int]  # path: size, for files only
    complete: bool  # False: the walk stopped at MAX_ENTRIES, or could not read a directory
    why: str = ""  # when not complete: why, in a sentence
    used: int = 0  # bytes the entries hold on disk: each one's length or its blocks, whichever is more
    privileged: tuple[str, ...] = ()  # files with a setuid or setgid bit (a command's doing: cleared after it)


@dataclass(frozen=True)
class Changed:
    rel: str  # as the file system has it (undecodable bytes as surrogate escapes)
    deleted: bool
    size: int
    sha256: str  # of the content (a link's target; nothing for a fifo or socket); "" when deleted


def snapshot(root: str, skip: str | None = None) -> Snapshot:
    """Every entry under `root` but the directory `skip` (a git directory inside the workspace)."""
    entries: dict[str, int] = {}
    sizes: dict[str, int] = {}
    privileged: list[str] = []
    used = names = 0
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(os.path.join(root, rel_dir) if rel_dir else root) as listing:
                for item in listing:
                    rel = os.path.join(rel_dir, item.name) if rel_dir else item.name
                    try:
                        st = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed meanwhile
                    names += len(rel)
                    if len(entries) >= MAX_ENTRIES or names > MAX_NAME_BYTES:
                        why = (
                            f"it holds more than {MAX_ENTRIES} entries"
                            if len(entries) >= MAX_ENTRIES
                            else f"its paths are longer than {MAX_NAME_BYTES >> 20} MiB together"
                        )
                        return Snapshot(entries, sizes, complete=False, why=why, used=used)
                    entries[rel] = hash((st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
                    # Blocks too: `fallocate --keep-size` takes disk past a file's end, its length unchanged.
                    used += max(st.st_size, st.st_blocks * 512)
                    if not stat.S_ISDIR(st.st_mode):
                        sizes[rel] = st.st_size
                        if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                            privileged.append(rel)
                    elif os.path.join(root, rel) != skip:
                        stack.append(rel)
        except FileNotFoundError:
            continue  # removed meanwhile
        except OSError as exc:
            # A directory that cannot be read (a path past PATH_MAX, a mode that shuts the runner out) would
            # hide what is under it from the record and the disk budget: the walk is not whole.
            depth = rel_dir.count(os.sep) + 1 if rel_dir else 0  # its depth, not its name (any length, any bytes)
            why = f"a directory {depth} levels down could not be read ({exc.strerror})"
            return Snapshot(entries, sizes, complete=False, why=why, used=used)
    return Snapshot(entries, sizes, complete=True, used=used, privileged=tuple(privileged))


def changes(before: Snapshot, after: Snapshot) -> list[Changed]:
    """Files (anything but a directory) created, changed or deleted between the two, sorted by path."""
    found: list[Changed] = []
    for rel in sorted(before.sizes.keys() | after.sizes.keys()):  # files, then and now
        if before.entries.get(rel) == after.entries.get(rel):
            continue
        size = after.sizes.get(rel)
        if size is None and not after.complete:
            continue  # past the walk's limit now: not seen is not deleted
        found.append(Changed(rel, deleted=size is None, size=size or 0, sha256=""))
    return found


def digest(root: str, change: Changed) -> Changed:
    """The change with its content's hash: a regular file's bytes, a link's target; never followed."""
    if change.deleted:
        return change
    path = os.path.join(root, change.rel)
    sha = hashlib.sha256()
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            sha.update(os.fsencode(os.readlink(path)))
        elif stat.S_ISREG(st.st_mode):
            fd = os.open(path, _READ_FLAGS)
            with os.fdopen(fd, "rb") as fh:
                # What was opened is what was looked at: a FIFO swapped in between (a writer feeding it
                # forever) or a file still growing is never read past the size seen.
                opened = os.fstat(fd)
                if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                    return change
                left = opened.st_size
                while left > 0 and (block := fh.read(min(_CHUNK, left))):
                    sha.update(block)
                    left -= len(block)
    except OSError:
        return change
    return Changed(change.rel, deleted=False, size=change.size, sha256=sha.hexdigest())


def unprivilege(root: str, rels: tuple[str, ...]) -> list[str]:
    """Take the setuid and setgid bits off these files (never through a link): the workspace is a
    directory of the machine, and a file a command made setuid stays so there after the command — as the
    runner's user, root in a container or under the local runtime, where any user who reaches it runs it
    as root. A file with more than one link may be one of the machine's own (a hard link to a system
    program): its mode is not touched, the workspace's name for it is removed. Returns the files."""
    done = []
    for rel in rels:
        path = os.path.join(root, rel)
        try:
            fd = os.open(path, _READ_FLAGS)
        except OSError:
            continue  # gone, or a link (whose own mode means nothing)
        try:
            st = os.fstat(fd)
            if not (stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID)):
                continue
            if st.st_nlink == 1:
                os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
            elif (os.lstat(path).st_ino, os.lstat(path).st_dev) == (st.st_ino, st.st_dev):
                os.unlink(path)
            done.append(rel)
        finally:
            os.close(fd)
    return done


def shown_path(rel: str) -> str:
    """A path fit for the ledger and a terminal: bytes that are no UTF-8, and control characters (a
    newline, an escape sequence in a file name), shown escaped as \\xNN."""
    text = os.fsencode(rel).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)

"""Where a run's control files live: the small files the worker and the runner itself write (the runner's
record, its environment and config, its log), under a memory-backed root when the machine has one.

Why: on the ext4 this box runs (no journal) creating an inode costs 23–265 µs, on tmpfs ~6 µs, and a forked
trivial run made eight (docs/throughput.md, "A run's own files off the slow disk"). What can be large — the
agent's workspace and the runner's state directory with the git directory — stays on disk under
`workspaces_dir`: nothing the agent writes lands in memory.

The root is, in order: the `run_files_dir` setting; a directory of its own in /dev/shm when that is a tmpfs
(`nexus-<uid>/<digest of workspaces_dir>`, 0700, or 0710 with the runs' group when runs run as another
user); else `<workspaces_dir>/.run-files` on disk. `<workspaces_dir>/.run-files` always leads there (a
symbolic link when the root is elsewhere), so a person or a tool that knows the data directory finds
every runner's log. A reboot empties the tmpfs: the runners it held are gone too, and their runs are
found lost by the sweep as any run whose runner is dead."""

import contextlib
import hashlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("nexus.worker.local")
LINK = ".run-files"
SHM = Path("/dev/shm")


def memory_backed(path: Path) -> bool:
    """`path` lies on a tmpfs (the mount with the longest mount point above it, /proc/self/mountinfo)."""
    target = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                point = left.split()[4].replace("\\040", " ")
                if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                    best, kind = point, right.split()[0]
    except (OSError, IndexError):
        return False
    return kind == "tmpfs"


def _private_dir(path: Path, gid: int) -> bool:
    """`path` a directory of this user's alone (0700), or traversable by group `gid` (0710): made when
    missing; one someone else made (or a symbolic link) is refused — /dev/shm is everyone's."""
    mode = 0o710 if gid else 0o700
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        log.warning("%s is not a directory of this user's; the runs' control files stay on disk", path)
        return False
    if gid and st.st_gid != gid:
        os.chown(path, -1, gid)
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
    return True


def memory_root(workspaces_dir: Path, gid: int = 0, shm: Path = SHM) -> Path | None:
    """A directory of this worker's data directory in `shm`, when that is a tmpfs; None when it is not."""
    if not shm.is_dir() or not memory_backed(shm):
        return None
    base = shm / f"nexus-{os.geteuid()}"
    root = base / hashlib.sha256(str(workspaces_dir).encode()).hexdigest()[:16]
    try:
        return root if _private_dir(base, gid) and _private_dir(root, gid) else None
    except OSError as exc:
        log.warning("cannot use %s for the runs' control files (%s); they stay on disk", shm, exc)
        return None


def run_files_root(workspaces_dir: Path, setting: str = "", gid: int = 0) -> Path:
    """The root of the runs' control files (see the module's doc); made, and linked from `.run-files`.
    A `.run-files` directory on disk (made by a start that found no tmpfs) is kept while no setting says
    otherwise: the runners recorded there are found and adopted."""
    link = workspaces_dir / LINK
    kept_on_disk = link.is_dir() and not link.is_symlink()
    root = Path(setting).resolve() if setting else None if kept_on_disk else memory_root(workspaces_dir, gid)
    if root is None or root == link:
        link.mkdir(parents=True, exist_ok=True)
        return link
    root.mkdir(parents=True, exist_ok=True)
    if kept_on_disk or (link.is_symlink() and os.readlink(link) == str(root)):
        return root  # a directory on disk is not replaced by the link while a setting names another root
    workspaces_dir.mkdir(parents=True, exist_ok=True)
    temp = workspaces_dir / f"{LINK}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    temp.symlink_to(root)
    temp.replace(link)  # atomic: a reader finds the old link or the new one
    return root

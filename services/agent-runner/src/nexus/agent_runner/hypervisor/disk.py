"""The run's disk budget: how many bytes the agent may add to its workspace and to the commands' HOME,
over what they held at its first tool call, whatever writes them (the file tools, a command's `dd`, an
interpreter's loop). A file tool's write that would pass it is refused; each command's files are capped
at what is left (RLIMIT_FSIZE), a command whose file system grows past what is left is ended (its
growth confirmed by a walk, since other processes share the file system), and after every command the
work tree is summed again. Once the budget is used up only `rm` runs, and writes that add bytes are
refused, until files are removed: a full disk is the machine's and every run's problem, not the agent's."""

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable

from nexus.agent_runner.hypervisor import changeset
from nexus.agent_runner.hypervisor.errors import Refused

BUDGET = 4 << 30
SIGXFSZ_EXITS = (-25, 128 + 25)  # a process the file-size limit ended: directly, or as bwrap reports it


def total(snapshot: changeset.Snapshot) -> int:
    return snapshot.used


def _fs_used(paths: Iterable[str]) -> tuple[int, int]:
    """Bytes and inodes used on the file systems holding `paths`, each file system once."""
    seen: dict[int, tuple[int, int]] = {}
    for path in paths:
        try:
            st, fs = os.stat(path), os.statvfs(path)
        except OSError:
            continue
        seen[st.st_dev] = ((fs.f_blocks - fs.f_bfree) * fs.f_frsize, fs.f_files - fs.f_ffree)
    return sum(b for b, _ in seen.values()), sum(i for _, i in seen.values())


class Budget:
    """`measure` sums what the budget covers now (a walk); the first measure is the run's starting point."""

    def __init__(self, limit: int, measure: Callable[[], int | None], paths: Callable[[], list[str]]) -> None:
        self.limit = limit
        self._measure = measure
        self._paths = paths
        self._base: int | None = None
        self._now: int | None = None
        self._unknown = False  # the last walk was not whole: counted as used up, until one is
        # What commits added to the repository's objects (outside the work tree, never walked with it): an
        # agent's commit, rm and write again filled the machine's disk through the git directory, past the
        # budget, one work tree's worth per commit.
        self.stored = 0

    def observe(self, now: int | None) -> None:
        """What the budget covers holds `now` bytes (summed by someone else's walk; None: not whole)."""
        self._unknown = now is None
        if now is None:
            return
        if self._base is None:
            self._base = now
        self._now = now

    def grown(self) -> int:
        """Bytes added so far (a walk when none was summed yet: callers on the event loop run it in a
        thread); the whole budget while the last walk was not whole — until a command's walk is."""
        if self._now is None and not self._unknown:
            self.observe(self._measure())
        if self._unknown or self._now is None or self._base is None:
            return self.limit
        return self._now - self._base + self.stored

    def left(self) -> int:
        return max(self.limit - self.grown(), 0)

    def full(self) -> bool:
        return self.grown() >= self.limit

    def store(self, delta: int) -> None:
        """The repository's objects grew by `delta` bytes (a commit): counted for the rest of the run."""
        self.stored += max(delta, 0)

    def add(self, delta: int) -> None:
        if self._now is not None:
            self._now += delta

    def forget(self) -> None:
        """Written in ways not counted here (a patch): summed anew when next needed."""
        self._now = None
        self._unknown = False

    def check_write(self, rel: str, delta: int) -> None:
        """Refuse a write that adds `delta` bytes past the budget (shrinking is always allowed)."""
        if delta > 0 and self.grown() + delta > self.limit:
            raise self.refusal(f"writing {rel} would add {delta} bytes")

    def refusal(self, what: str) -> Refused:
        return Refused(
            "disk-budget",
            f"{what}; the run may add at most {self.limit >> 20} MiB to its workspace, HOME and commits, and has added "
            f"{max(self.grown(), 0) >> 20} MiB. Remove files (rm) first: until then only rm runs and writes "
            "that add bytes are refused",
        )

    def guard(self, entries: int) -> Callable[[], Awaitable[str]]:
        """A command's watch: "disk" once what it wrote passes what is left of the budget, or once the
        workspace holds more entries than the walk follows (`entries`: how many it held before). Empty
        files, directories and links hold no counted byte but each takes an inode of the machine's disk:
        without this a command made millions of them until its timeout."""
        allowed = self.left()
        begun = self._now or 0  # set by left(), unless the walk was not whole (then nothing is allowed)
        paths = self._paths()
        used, inodes = _fs_used(paths)
        # New inodes past which a walk confirms: what the walk can still follow (a floor, so a workspace
        # near the limit is not walked at every poll for the machine's other files).
        made_allowed = max(changeset.MAX_ENTRIES - entries, changeset.MAX_ENTRIES // 50)

        async def reached() -> str:
            nonlocal used, inodes
            now_used, now_inodes = _fs_used(paths)
            grew = now_used - used
            if grew <= allowed and now_inodes - inodes <= made_allowed:
                return ""
            measured = await asyncio.to_thread(self._measure)
            if measured is None:  # past the walk's reach (too many entries, or out of its sight)
                return "disk"
            wrote = measured - begun
            if wrote > allowed:
                return "disk"
            used += grew - max(wrote, 0)  # the rest was written by other processes of the machine
            inodes = now_inodes  # the walk was whole: the entries made so far are within what it follows
            return ""

        return reached

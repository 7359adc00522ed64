"""apply_patch without trusting the patch text nor the workspace's directories.

1. git's own parser reads the patch (hardened git, `git apply --numstat -z` and `--summary` in an
   empty private directory, no repository): the paths it would touch and every file mode it would
   set. Whatever the spelling in the patch (extra spaces, leading zeros), git reports the mode it
   will use, and any mode other than a regular file's (100644, 100755) is refused: no symlink
   (120000), no gitlink (160000), nothing odd.
2. The files the patch touches are copied (read path-safely) into that private directory, and the
   patch is applied there: git never writes into the workspace, so a parent directory swapped for
   a symlink during the apply changes nothing.
3. Each result must be a regular file (or gone); it is written back into the workspace one
   component at a time with O_NOFOLLOW and an atomic rename (paths.Workspace)."""

import os
import re
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from nexus.agent_runner.hypervisor.commands import CommandOutcome
from nexus.agent_runner.hypervisor.errors import Refused
from nexus.agent_runner.hypervisor.paths import Workspace

MAX_FILE_BYTES = 8 << 20
REGULAR_MODES = frozenset({"100644", "100755"})
# git's numstat names only the new path of a rename or copy: the sources come from the extended headers
# (a name git would read differently only makes the apply fail, never widens what is written).
_SOURCES = re.compile(r"^(?:rename|copy) from (.+)$", re.MULTILINE)
_MODES = re.compile(
    r"^ (?:(?:create|delete) mode (?P<one>\d+) |mode change (?P<old>\d+) => (?P<new>\d+) )", re.MULTILINE
)
Git = Callable[..., Awaitable[CommandOutcome]]  # hardened git outside any repository: (*args, cwd=...)


@dataclass
class Plan:
    patch_file: Path
    tree: Path  # the private copy the patch is applied to
    paths: list[str]


def _text(outcome: CommandOutcome) -> str:
    return outcome.output.decode("utf-8", errors="replace")


async def plan(patch: bytes, scratch: Path, git: Git) -> Plan:
    """What the patch touches, as git reads it; refuses any non-regular mode."""
    patch_file, tree = scratch / "patch.diff", scratch / "tree"
    patch_file.write_bytes(patch)
    tree.mkdir(mode=0o700)
    numstat = await git("apply", "--numstat", "-z", str(patch_file), cwd=str(tree))
    if numstat.exit_code != 0:
        raise Refused("invalid-patch", _text(numstat).strip())
    summary = await git("apply", "--summary", str(patch_file), cwd=str(tree))
    if summary.exit_code != 0:
        raise Refused("invalid-patch", _text(summary).strip())
    if numstat.truncated or summary.truncated:
        # Paths and modes past the output cap would go unchecked (and unwritten): refused, not half applied.
        raise Refused("too-large", "the patch names more files than can be checked; split it")
    for match in _MODES.finditer(_text(summary)):
        for mode in filter(None, match.group("one", "old", "new")):
            if mode not in REGULAR_MODES:
                kind = {"120000": "a symlink", "160000": "a submodule (gitlink)"}.get(
                    mode.lstrip("0").rjust(6, "0"), f"mode {mode}"
                )
                raise Refused(
                    "symlink" if mode.endswith("120000") else "not-regular-file",
                    f"patches may only touch regular files; this one makes {kind}",
                )
    # numstat -z: "added\tdeleted\tpath\0", or "added\tdeleted\t\0from\0to\0" for a rename or copy.
    named = {item.split("\t")[-1] for item in numstat.output.decode(errors="surrogateescape").split("\0")}
    named |= set(_SOURCES.findall(patch.decode(errors="surrogateescape")))
    paths = sorted(named - {""})
    if not paths:
        raise Refused("invalid-patch", "the patch touches no file")
    for path in paths:
        if any(ord(c) < 32 or 0xDC80 <= ord(c) <= 0xDCFF or c == "\ufffd" for c in path):
            raise Refused("invalid-path", "patch paths must be printable UTF-8")
    return Plan(patch_file=patch_file, tree=tree, paths=paths)


def _copy_in(plan: Plan, ws: Workspace) -> None:
    for path in plan.paths:
        mode = ws.mode(path)
        if mode is None:
            continue
        data, size = ws.read_bytes(path, MAX_FILE_BYTES)
        if size > len(data):
            raise Refused("too-large", f"{path} is larger than {MAX_FILE_BYTES} bytes")
        target = plan.tree / path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o755 | 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)


def _result(plan: Plan, path: str) -> tuple[bytes | None, int]:
    """The patched file (None when the patch removed it) and its mode; refuses anything not regular."""
    target = plan.tree / path
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return None, 0
    if not stat.S_ISREG(st.st_mode):
        raise Refused("not-regular-file", f"{path}: the patch does not leave a regular file")
    fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        return fh.read(MAX_FILE_BYTES + 1), 0o755 if st.st_mode & 0o100 else 0o644


async def apply(plan: Plan, ws: Workspace, git: Git) -> list[tuple[str, bytes | None]]:
    """Apply in the private tree, then write the results back. Returns (path, new content or None)."""
    _copy_in(plan, ws)
    applied = await git("apply", "--whitespace=nowarn", str(plan.patch_file), cwd=str(plan.tree))
    if applied.exit_code != 0:
        raise Refused("patch-failed", _text(applied).strip())
    results = [(path, *_result(plan, path)) for path in plan.paths]
    for path, data, _ in results:
        if data is not None and len(data) > MAX_FILE_BYTES:
            raise Refused("too-large", f"the patch makes {path} larger than {MAX_FILE_BYTES} bytes")
    for path, data, mode in results:
        if data is None:
            ws.remove(path)
        else:
            ws.write_bytes(path, data, mode)
    return [(path, data) for path, data, _ in results]

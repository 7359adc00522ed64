"""Path confinement: every path the model names resolves inside the workspace.

A path is refused when it is absolute, has a `..` component, or resolves (symlinks followed,
os.path.realpath) outside the workspace or into /proc, /sys or /dev. Files are then opened by
walking the *resolved* path from the workspace one component at a time with O_NOFOLLOW, so a
symlink swapped in after the check makes the open fail instead of escaping. Writes never go
through a symlink, never into `.git`, and replace the directory entry (temp file + rename), so
a hard link to a file outside the workspace is cut, not written through."""

import os
import re
import secrets
import shutil
import stat
import subprocess
from pathlib import Path

from nexus.agent_runner.hypervisor.errors import Refused

_SPECIAL_ROOTS = ("/proc", "/sys", "/dev")
_CONTROL = re.compile(r"[\x01-\x1f\x7f]")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _is_git_part(part: str) -> bool:
    return part.casefold() == ".git"


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class Workspace:
    def __init__(self, root: Path | str) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise ValueError(f"workspace {root} is not a directory")

    def resolve(self, user_path: str, *, writing: bool = False) -> str:
        """The workspace-relative, symlink-free form of `user_path` ("." for the workspace)."""
        if not user_path:
            raise Refused("invalid-path", "the path is empty")
        if "\x00" in user_path:
            raise Refused("invalid-path", "the path contains a NUL byte")
        if _CONTROL.search(user_path):
            # A newline or a terminal escape in a name would reach the ledger, events and people's terminals.
            raise Refused("invalid-path", "the path contains a control character")
        if os.path.isabs(user_path):
            raise Refused("absolute-path", f"'{user_path}': paths are relative to the workspace")
        parts = user_path.split("/")
        if ".." in parts:
            raise Refused("path-escape", f"'{user_path}': '..' is not allowed")
        joined = os.path.join(self.root, user_path)
        real = os.path.realpath(joined)
        if any(_within(real, special) for special in _SPECIAL_ROOTS):
            raise Refused("special-filesystem", f"'{user_path}' resolves into {real}")
        if not _within(real, self.root):
            raise Refused("outside-workspace", f"'{user_path}' resolves outside the workspace")
        rel = os.path.relpath(real, self.root)
        if writing:
            self._check_writable(user_path, joined, rel)
        return rel

    def _check_writable(self, user_path: str, joined: str, rel: str) -> None:
        if rel == ".":
            raise Refused("invalid-path", "the workspace itself is not a file")
        if any(_is_git_part(p) for p in user_path.split("/") + rel.split(os.sep)):
            raise Refused("git-internals", f"'{user_path}': the .git directory is not writable")
        if os.path.islink(joined.rstrip("/")):
            raise Refused("symlink", f"'{user_path}' is a symlink; writes never go through one")

    # --- opening, one component at a time -------------------------------------------------

    def _open_parent(self, rel: str, *, create: bool = False) -> tuple[int, str]:
        """A directory fd for the parent of `rel`, and the last component's name."""
        parts = [p for p in rel.split(os.sep) if p not in ("", ".")]
        if not parts:
            raise Refused("invalid-path", "the workspace itself is not a file")
        dfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts[:-1]:
                if create:
                    try:
                        os.mkdir(part, 0o755, dir_fd=dfd)
                    except FileExistsError:
                        pass
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=dfd)
                except FileNotFoundError:
                    raise Refused("not-found", f"{rel}: no such directory '{part}'") from None
                except OSError as exc:  # ELOOP/ENOTDIR: a symlink or file swapped in
                    raise Refused(
                        "not-a-directory", f"{rel}: '{part}' is not a plain directory ({exc.strerror})"
                    ) from None
                os.close(dfd)
                dfd = nfd
        except BaseException:
            os.close(dfd)
            raise
        return dfd, parts[-1]

    def open_dir(self, rel: str) -> int:
        if rel == ".":
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        dfd, name = self._open_parent(rel)
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            raise Refused("not-found", f"{rel}: no such directory") from None
        except OSError as exc:
            raise Refused("not-a-directory", f"{rel}: {exc.strerror}") from None
        finally:
            os.close(dfd)

    def read_bytes(self, rel: str, limit: int) -> tuple[bytes, int]:
        """Up to `limit` bytes of a regular file, and its full size."""
        dfd, name = self._open_parent(rel)
        try:
            try:
                before = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                raise Refused("not-found", f"{rel}: no such file") from None
            _require_regular(rel, before)
            if before.st_nlink > 1:
                raise Refused(
                    "hard-link", f"{rel} has {before.st_nlink} links and may alias a file outside the workspace"
                )
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
            try:
                fd = os.open(name, flags, dir_fd=dfd)
            except OSError as exc:
                raise Refused("open-failed", f"{rel}: {exc.strerror}") from None
        finally:
            os.close(dfd)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
                raise Refused("symlink", f"{rel} changed while it was opened")
            chunks, size = [], 0
            while size < limit and (chunk := os.read(fd, min(1 << 20, limit - size))):
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks), st.st_size
        finally:
            os.close(fd)

    def mode(self, rel: str) -> int | None:
        """The permission bits of the regular file `rel`, None when there is no such file."""
        try:
            dfd, name = self._open_parent(rel)
        except Refused as refusal:
            if refusal.reason == "not-found":
                return None
            raise
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(dfd)
        _require_regular(rel, st)
        return stat.S_IMODE(st.st_mode)

    def size(self, rel: str) -> int:
        """The size of the regular file `rel`, 0 when there is none."""
        try:
            dfd, name = self._open_parent(rel)
        except Refused:
            return 0
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            return 0
        finally:
            os.close(dfd)
        return st.st_size if stat.S_ISREG(st.st_mode) else 0

    def remove(self, rel: str) -> None:
        """Delete the regular file `rel` (never through a symlinked parent); gone already is fine."""
        try:
            dfd, name = self._open_parent(rel)
        except Refused as refusal:
            if refusal.reason == "not-found":
                return
            raise
        try:
            try:
                _require_regular(rel, os.stat(name, dir_fd=dfd, follow_symlinks=False))
            except FileNotFoundError:
                return
            os.unlink(name, dir_fd=dfd)
        finally:
            os.close(dfd)

    def write_bytes(self, rel: str, data: bytes, mode: int | None = None) -> None:
        """Replace (or create) the regular file `rel` with `data`, atomically; `mode` or the old one's."""
        dfd, name = self._open_parent(rel, create=True)
        tmp = f".{name[:80]}.nexus-{secrets.token_hex(6)}.tmp"
        try:
            new_mode = 0o644
            try:
                existing = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                _require_regular(rel, existing)
                new_mode = stat.S_IMODE(existing.st_mode)
            mode = new_mode if mode is None else mode
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fchmod(fd, mode)
                finally:
                    os.close(fd)
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except OSError as exc:
                os.unlink(tmp, dir_fd=dfd)
                raise Refused("write-failed", f"{rel}: {exc.strerror}") from None
        finally:
            os.close(dfd)


def _require_regular(rel: str, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise Refused("symlink", f"{rel} is a symlink")
    if stat.S_ISDIR(st.st_mode):
        raise Refused("is-a-directory", f"{rel} is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise Refused("special-file", f"{rel} is not a regular file (device, FIFO or socket)")


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove a directory tree of any depth. shutil.rmtree recurses once per level, so a tree a command
    made a thousand directories deep is a RecursionError (even with ignore_errors); such a tree is
    then removed by GNU rm, which walks any depth, never follows a link and stays on the tree's own
    filesystem. Raises OSError when the tree could not be removed."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except RecursionError:
        done = subprocess.run(
            ["rm", "-rf", "--one-file-system", "--", os.fspath(path)], stdin=subprocess.DEVNULL, capture_output=True
        )
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip()[:500]
            raise OSError(f"could not remove {os.fspath(path)}: {why}") from None

"""Git that nothing an agent writes can steer: the one way the runner and the hypervisor call git.

Every invocation gets
- an environment built from nothing: PATH, locale, an empty private HOME, `GIT_CONFIG_GLOBAL=/dev/null`
  and `GIT_CONFIG_NOSYSTEM=1` (so no global or system config, hence no aliases, filter, textconv,
  diff or merge drivers can be defined anywhere but in the repository's own config, which lives in
  a runner-private git directory and is written only by the runner);
- `-c` overrides that switch off what could still run code or reach out: hooks, fsmonitor, the
  untracked cache, signing, pagers, credential helpers, the `ext::` transport;
- the repository named by GIT_DIR/GIT_WORK_TREE when the git directory lives outside the work tree,
  so a `.git` an agent plants in the workspace is never read.
A `.gitattributes` naming `filter=x`, `diff=x` or `merge=x` stays inert: with the config isolated,
no such driver is defined. The credential is added by `with_credential` to the environment of the
single invocation that talks to the remote, and to no other."""

import base64
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

HARDENING: tuple[str, ...] = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.untrackedCache=false",
    "-c",
    "core.attributesFile=/dev/null",
    "-c",
    "core.pager=cat",
    "-c",
    "core.askPass=",
    "-c",
    "credential.helper=",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "tag.gpgSign=false",
    "-c",
    "protocol.ext.allow=never",
    "-c",
    "submodule.recurse=false",
    "-c",
    "log.mailmap=false",  # the work tree's .mailmap is the agent's: it would rename authors in a log, or stall it
)
# Options that keep diff-like commands from running an external diff or a textconv program.
NO_DRIVERS: tuple[str, ...] = ("--no-ext-diff", "--no-textconv")
# What of the caller's environment git (and an agent's command) may see: locale, PATH, identity.
ENV_KEEP = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
)


def private_dir(path: Path) -> Path:
    """A directory only this user can enter (created empty when missing)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def env(
    base: Mapping[str, str], home: Path, *, git_dir: Path | None = None, work_tree: Path | None = None
) -> dict[str, str]:
    """The environment of a hardened git invocation: nothing inherited but PATH, locale and identity."""
    out = {key: base[key] for key in ENV_KEEP if key in base}
    out.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    out.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_ATTR_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_PAGER": "cat",
            "GIT_EDITOR": ":",
            "GIT_NO_REPLACE_OBJECTS": "1",
            "GIT_OPTIONAL_LOCKS": "0",
        }
    )
    if git_dir is not None:
        out["GIT_DIR"] = str(git_dir)
    if work_tree is not None:
        out["GIT_WORK_TREE"] = str(work_tree)
        out["GIT_CEILING_DIRECTORIES"] = str(Path(work_tree).parent)
    return out


def with_credential(env: Mapping[str, str], token: str | None) -> dict[str, str]:
    """`env` plus the token as an HTTP header (never argv, never a config file, never a URL). Only for
    the one clone/fetch/push invocation: no agent-written file is read by it."""
    out = dict(env)
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        out.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            }
        )
    return out


# Files in a git directory that can change how git behaves (config, drivers, where objects come from).
_STEERING = ("config", "config.worktree", "commondir", "info/attributes", "objects/info/alternates")


def steering_digest(git_dir: Path) -> str:
    """A digest of the git directory's steering files: the runner seals it after writing the config
    and refuses to run git once it changed (something other than the runner wrote there)."""
    digest = hashlib.sha256()
    for name in _STEERING:
        try:
            data = (git_dir / name).read_bytes()
        except FileNotFoundError:
            data = b"\0absent"
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


# Subcommands that never look at the work tree: every other one is checked for nested repositories.
_TREELESS = frozenset(
    {"rev-parse", "log", "cat-file", "push", "fetch", "ls-remote", "merge-base", "config", "rev-list", "show"}
)


def subcommand(args: tuple[str, ...] | list[str]) -> str:
    """The git subcommand of `args` (after any leading `-c name=value` pairs)."""
    i = 0
    while i < len(args) and args[i] == "-c":
        i += 2
    return args[i] if i < len(args) else ""


def reads_work_tree(args: tuple[str, ...] | list[str]) -> bool:
    return subcommand(args) not in _TREELESS


# Files git opens by name wherever it meets them in the work tree (not only those it is asked to add).
_READ_BY_NAME = frozenset({".gitattributes", ".gitignore", ".gitmodules", ".mailmap"})


def nested_git(work_tree: Path | str) -> str:
    """The path (relative to the work tree) of the first entry git must not meet there, or "":
    - a `.git` entry (any case; directory, file or link) below the root: git takes a directory holding
      one for a repository of its own: `add -A` stages it as a gitlink, and status, diff and add then run
      `git status` inside it — with its config, so its filters and drivers, outside any sandbox. The
      root's own `.git` is skipped by git (the repository is named by GIT_DIR), so it is not reported;
    - a FIFO, socket or device named like a file git opens by name (`.gitignore`, `.gitattributes`,
      `.gitmodules`, `.mailmap`): git's open of a FIFO waits for a writer that never comes, so every git
      call stalled to its timeout (the runner's own `git status`, which has none, for ever).
    Links are not followed. The walk keeps its own stack (a tree thousands of directories deep is no
    recursion) and opens each directory by its path relative to the root, as git, running there, does."""
    root = os.open(os.fspath(work_tree), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pending = [""]
        while pending:
            rel = pending.pop()
            try:
                fd = os.open(rel or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root)
                try:
                    with os.scandir(fd) as entries:
                        listed = [(entry.name, _kind(entry)) for entry in entries]
                finally:
                    os.close(fd)
            except OSError:
                # Gone, or not listable: git, which stats `<dir>/.git` without listing, would still see one.
                if rel:
                    try:
                        os.lstat(f"{rel}/.git", dir_fd=root)
                    except OSError:
                        continue
                    return f"{rel}/.git"
                continue
            for name, kind in listed:
                path = f"{rel}/{name}" if rel else name
                if name.casefold() == ".git":
                    if rel:
                        return path
                    continue  # the root's own: not a repository git sees, not descended into
                if kind == "special" and name.casefold() in _READ_BY_NAME:
                    return path
                if kind == "dir":
                    pending.append(path)
        return ""
    finally:
        os.close(root)


def clear_locks(git_dir: Path, since_ns: int) -> list[str]:
    """Remove the lock files (`index.lock`, `HEAD.lock`, `refs/.../*.lock`, ...) made at or after
    `since_ns` in `git_dir`: git ended by a timeout (SIGKILL) leaves them, and every later git that
    writes then fails ("index.lock: File exists") for the rest of the run, the runner's own final commit
    too. Only for git the caller killed, which was the repository's one writer. Returns what was removed
    (relative paths); `objects` is not walked (git takes no lock there that outlives it)."""
    removed = []
    for dirpath, dirnames, filenames in os.walk(git_dir):
        if dirpath == os.fspath(git_dir):
            dirnames[:] = [d for d in dirnames if d != "objects"]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                if name.endswith(".lock") and os.lstat(path).st_mtime_ns >= since_ns:
                    os.unlink(path)
                    removed.append(os.path.relpath(path, git_dir))
            except FileNotFoundError:
                continue
    return removed


def hazard(path: str) -> tuple[str, str]:
    """The refusal's reason and its words for an entry `nested_git` found."""
    if os.path.basename(path).casefold() == ".git":
        return "nested-git", (
            f"the workspace holds a git repository of its own at {path}; git would run its config (filters, "
            "drivers) outside the sandbox"
        )
    return "special-file", (
        f"the workspace holds {path}, which is no regular file (a FIFO, socket or device): git opens it by "
        "name and would wait on it"
    )


def _kind(entry: os.DirEntry[str]) -> str:
    """ "dir", "special" (a FIFO, socket or device), or "other" (a file or a link); links never followed."""
    if entry.is_dir(follow_symlinks=False):
        return "dir"
    if entry.is_file(follow_symlinks=False) or entry.is_symlink():
        return "other"
    return "special"


def argv(*args: str) -> list[str]:
    return ["git", *HARDENING, *args]

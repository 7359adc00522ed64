"""The run's working tree: a fresh clone of the registered repo on the run's own branch.

The work tree is the agent's workspace; the git directory is NOT in it: it lives in a runner-private
directory (`RunGit.git_dir`), named to git by GIT_DIR/GIT_WORK_TREE, so no command an agent runs can
write git's config, hooks or objects. Every git call goes through `safegit` (isolated config, no
hooks, fsmonitor, filters or helpers); the repository credential is handed only to the single
clone, fetch or push invocation that talks to the remote."""

import asyncio
import contextlib
import os
import re
import signal
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from nexus.agent_runner.hypervisor import paths, safegit
from nexus.events.payloads import RepoSpec


class GitError(Exception):
    pass


class GitRefused(GitError):
    """A git call of the runner's refused or ended for what the agent made of the work tree: recorded in
    the ledger with its reason, and the run fails, rather than a crash or a hang."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class NestedGit(GitRefused):
    """The work tree holds what git must not meet: a repository of its own (git, run outside the sandbox,
    would obey its config), or a FIFO where git opens a file by name (it would wait on it)."""

    def __init__(self, message: str, reason: str = "nested-git") -> None:
        super().__init__(message, reason)


class GitTimedOut(GitRefused):
    """A git call of the runner's did not finish within its bound and was ended (with what it started)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "git-timeout")


# The bound of each git call of the runner's own (a clone, the final status, the canary's reads, a push).
# A work tree the agent shaped can make git run for hours: 100,000 files under a .gitignore of a million
# patterns is 10^11 matches for one `git status`.
GIT_TIMEOUT_S = 600.0


_UNSEALABLE = "unsealable"  # a seal no digest matches: the repository could not be written, git is refused
_BARE = re.compile(r"(?m)^(\s*bare\s*=\s*)\S+\s*$")  # compiled once (in the zygote), not per run


@dataclass
class RunGit:
    """Where the run's repository lives: the agent's work tree and the runner's private parts."""

    work_tree: Path
    private: Path  # runner-only: the git directory and git's empty HOME
    base: dict[str, str] = field(default_factory=dict)  # PATH, locale (no secrets, no credential)
    timeout_s: float = GIT_TIMEOUT_S  # each git call's bound (`run_git`)
    sealed: str = ""  # safegit.steering_digest once the runner wrote the config: any change stops git
    _home_made: bool = field(default=False, repr=False, compare=False)
    # A run without a repository: the (name, email) of the empty repository still to be written, on
    # the first git call that needs it (`ensure`). None once written, and for a cloned repository.
    _owed: tuple[str, str] | None = field(default=None, repr=False, compare=False)

    def ensure(self) -> str:
        """The repository's seal, writing the repository first when it is still owed: a run without a
        repository gets its empty one (and pays its directories and files) only when something needs
        git — the final commit of a run that wrote files, a git tool, an external CLI's run. Until
        then no git process can run against it: there is nothing to run against. Written as at
        `prepare` (`init_repository`), then sealed; a failure refuses every later git call."""
        if self._owed is not None:
            name, email = self._owed
            self._owed = None
            self.sealed = _UNSEALABLE  # until written and sealed below, no git runs here
            safegit.private_dir(self.private)
            init_repository(self, identity=(name, email))
            self.sealed = safegit.steering_digest(self.git_dir)
        return self.sealed

    @property
    def owed(self) -> bool:
        """The repository is still to be written (a run without one that has not needed git yet)."""
        return self._owed is not None

    def check_sealed(self) -> None:
        self.ensure()
        if self.sealed and safegit.steering_digest(self.git_dir) != self.sealed:
            raise GitError(
                "the run's git directory was changed outside the runner (config, attributes or alternates); git refused"
            )

    @property
    def git_dir(self) -> Path:
        return self.private / "repo.git"

    @property
    def home(self) -> Path:
        """git's empty HOME, made (0700) by the first git process a run starts: most runs without a
        repository start none."""
        if not self._home_made:
            safegit.private_dir(self.private / "home")
            self._home_made = True
        return self.private / "home"

    def env(self, *, repo: bool = True) -> dict[str, str]:
        return safegit.env(
            self.base, self.home, git_dir=self.git_dir if repo else None, work_tree=self.work_tree if repo else None
        )


Reader = Callable[[asyncio.StreamReader], Awaitable[None]]


async def run_git(
    rg: RunGit,
    *args: str,
    token: str | None = None,
    stdin: bytes | None = None,
    repo: bool = True,
    check: bool = True,
    reader: Reader | None = None,
) -> tuple[int, bytes]:
    """git, hardened and bounded. `reader`: reads the output as it comes instead (what a run commits can be
    gigabytes: held whole it ended the runner at its memory limit); git is ended once it returns."""
    if repo:
        rg.check_sealed()
        if safegit.reads_work_tree(args) and (nested := await asyncio.to_thread(safegit.nested_git, rg.work_tree)):
            reason, why = safegit.hazard(nested)
            raise NestedGit(f"{why}; git {safegit.subcommand(args)} refused", reason)
    env = safegit.with_credential(rg.env(repo=repo), token) if token else rg.env(repo=repo)
    cwd = rg.work_tree if repo and rg.work_tree.is_dir() else rg.private
    started = time.time_ns() - 2_000_000_000  # a file's time is the kernel's coarse clock: a little behind
    proc = await asyncio.create_subprocess_exec(
        *safegit.argv(*args),
        cwd=str(cwd),
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own group: what it starts (a remote helper) is ended with it
    )
    try:
        out, err, stopped = await asyncio.wait_for(_exchange(proc, stdin, reader), rg.timeout_s)
    except TimeoutError:
        await _end_git(proc)
        if repo and rg.git_dir.is_dir():  # the locks it was killed holding would refuse every later git write
            await asyncio.to_thread(safegit.clear_locks, rg.git_dir, started)
        raise GitTimedOut(
            f"git {safegit.subcommand(args)} did not finish within {rg.timeout_s:g} s and was ended"
        ) from None
    except BaseException:  # the run cancelled meanwhile: git does not outlive it
        await asyncio.shield(_end_git(proc))
        raise
    code = 0 if stopped else proc.returncode or 0  # ended by us once its reader had what it wanted
    if check and code != 0:
        raise GitError(f"git {args[0]} failed ({code}): {err.decode(errors='replace').strip()[:1000]}")
    return code, out


async def _exchange(
    proc: asyncio.subprocess.Process, stdin: bytes | None, reader: Reader | None
) -> tuple[bytes, bytes, bool]:
    """(output, errors, whether git was ended because its reader returned before the end)."""
    if reader is None:
        return (*await proc.communicate(stdin), False)
    assert proc.stdout is not None and proc.stderr is not None
    feeding = asyncio.create_task(_feed(proc, stdin))
    errors = asyncio.create_task(proc.stderr.read())
    try:
        await reader(proc.stdout)
    finally:
        feeding.cancel()
    stopped = not proc.stdout.at_eof()
    if stopped:  # the reader has what it wanted: the rest is not waited for
        await _end_git(proc)
    await proc.wait()
    return b"", await errors, stopped


async def _feed(proc: asyncio.subprocess.Process, data: bytes | None) -> None:
    if proc.stdin is None:
        return
    with contextlib.suppress(ConnectionError):  # git ended before reading it all
        if data:
            proc.stdin.write(data)
            await proc.stdin.drain()
        proc.stdin.close()


async def _end_git(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def git(rg: RunGit, *args: str, token: str | None = None) -> str:
    return (await run_git(rg, *args, token=token))[1].decode(errors="replace").strip()


def reset(rg: RunGit) -> None:
    """A retried attempt in the same place starts clean: no work tree, no git directory."""
    rg._owed = None
    for path in (rg.work_tree, rg.git_dir):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            paths.remove_tree(path)
        else:
            path.unlink()


async def prepare(repo: RepoSpec | None, rg: RunGit, *, agent_id: str, token: str | None) -> None:
    """The run's work tree, and its repository: cloned (and sealed) now when the run has one; for a
    run without one, an empty work tree and an empty repository owed until git is first needed
    (`RunGit.ensure`) — most such runs never commit, and each directory or file made costs a run an
    inode allocation (~0.4 ms each on ext4 without a journal)."""
    reset(rg)
    rg.sealed = ""
    identity = (f"Nexus agent {agent_id}", f"{agent_id}@agents.nexus.invalid")
    if repo is None:
        rg.work_tree.mkdir(parents=True)  # fresh: `reset` removed an earlier attempt's, so no .git in it
        rg._owed = identity
        return
    safegit.private_dir(rg.private)
    rg.work_tree.parent.mkdir(parents=True, exist_ok=True)
    await clone(repo, rg, token)
    await git(rg, "reset", "-q", "--hard", "HEAD")  # the checkout, without the credential
    if not await continue_run_branch(rg, repo.branch, token):
        await git(rg, "checkout", "-q", "-b", repo.branch)
    write_identity(rg, name=identity[0], email=identity[1])
    if (rg.work_tree / ".git").exists() or (rg.work_tree / ".git").is_symlink():
        raise GitError("the workspace holds a .git entry after preparing it")
    rg.sealed = safegit.steering_digest(rg.git_dir)


def init_repository(rg: RunGit, branch: str = "main", *, identity: tuple[str, str] | None = None) -> None:
    """An empty repository in the run's private git directory for its work tree: what `git init -q -b
    <branch>` makes there with git's templates left out (sample hooks that never run — hooks are off —
    a description and an exclude file of comments), written directly: a run without a repository
    starts no git process to get one. Only the directories git needs to see a repository (`objects`,
    `refs`): git makes `objects/pack`, `refs/heads`, `refs/tags` and the rest when it first writes
    there, and every directory made costs each run an inode. `identity` (name, email) goes into the
    same single write of the config, as `write_identity` would add it. The git directory must not
    exist yet: one found there was not made by this runner, and is refused."""
    git_dir = rg.git_dir
    try:
        git_dir.mkdir(mode=0o700)
    except FileExistsError:
        raise GitError("the run's git directory exists before the runner wrote it; git refused") from None
    for sub in ("objects", "refs"):
        (git_dir / sub).mkdir()
    (git_dir / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
    user = ""
    if identity:
        user = f"[user]\n\tname = {_config_value(identity[0])}\n\temail = {_config_value(identity[1])}\n"
    (git_dir / "config").write_text(
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n"
        f"\tworktree = {_config_value(str(rg.work_tree))}\n" + user
    )


def _config_value(value: str) -> str:
    if any(c in value for c in "\n\r\0"):
        raise GitError("a git identity may not hold line breaks")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_identity(rg: RunGit, *, name: str, email: str) -> None:
    """`core.bare false` and the agent's identity, written into the git directory's config file as
    `git config` would (three git processes fewer per run, ~10 ms of CPU). Before the seal: the
    runner's own write, like the clone's."""
    path = rg.git_dir / "config"
    text = path.read_text()
    text, found = _BARE.subn(r"\g<1>false", text, count=1)
    if not found:
        text += "[core]\n\tbare = false\n"
    text += f"[user]\n\tname = {_config_value(name)}\n\temail = {_config_value(email)}\n"
    path.write_text(text)


async def continue_run_branch(rg: RunGit, branch: str, token: str | None) -> bool:
    """A retried attempt continues from the run branch an earlier attempt already pushed, so its own
    push fast-forwards (and adds no commit when the work is already there). False when none was pushed."""
    if not await git(rg, "ls-remote", "--heads", "origin", f"refs/heads/{branch}", token=token):
        return False
    await fetch(rg, branch, token)
    await git(rg, "checkout", "-q", "-B", branch, f"refs/remotes/origin/{branch}")
    return True


async def clone(repo: RepoSpec, rg: RunGit, token: str | None) -> None:
    """The one networked step of preparing: objects and refs only (no checkout), into the private
    git directory; the `.git` pointer file git leaves in the work tree is removed."""
    await run_git(
        rg,
        "clone",
        "-q",
        "--no-checkout",
        "--single-branch",
        "--no-tags",
        "--branch",
        repo.ref,
        f"--separate-git-dir={rg.git_dir}",
        "--",
        repo.url,
        str(rg.work_tree),
        token=token,
        repo=False,
    )
    os.unlink(rg.work_tree / ".git")


async def has_changes(rg: RunGit) -> bool:
    return bool(await git(rg, "status", "--porcelain", "--untracked-files=all"))


async def head(rg: RunGit) -> str:
    try:
        return await git(rg, "rev-parse", "--verify", "-q", "HEAD")
    except GitError:
        return ""


async def push(rg: RunGit, branch: str, token: str | None) -> None:
    """Push HEAD to `branch` (the caller has checked what goes out: see outgoing.py)."""
    await git(rg, "push", "-q", "origin", f"HEAD:refs/heads/{branch}", token=token)


async def fetch(rg: RunGit, branch: str, token: str | None) -> None:
    await git(
        rg, "fetch", "-q", "--no-tags", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}", token=token
    )


def base_env(environ: dict[str, str]) -> dict[str, str]:
    """What the run's commands and git inherit from the runner: PATH and locale, never its HOME."""
    return {k: v for k, v in environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}


async def merge_into(rg: RunGit, target: str, token: str | None) -> str:
    """Bring the run branch into `target` locally: fast-forward when the target has not moved, else a
    merge commit on top of it (a conflict raises GitError). Returns the sha to push to `target`."""
    await fetch(rg, target, token)
    fetched = f"refs/remotes/origin/{target}"
    code, _ = await run_git(rg, "merge-base", "--is-ancestor", fetched, "HEAD", check=False)
    if code != 0:
        await git(rg, "merge", "-q", "--no-edit", fetched)
    return await head(rg)

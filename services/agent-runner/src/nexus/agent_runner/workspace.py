"""The run's working tree: a fresh clone of the registered repo on the run's own branch."""

import asyncio
import base64
import os
from pathlib import Path

from nexus.events.payloads import RepoSpec


class GitError(Exception):
    pass


def git_env(base: dict[str, str], token: str | None) -> dict[str, str]:
    """Credentials travel as an HTTP header set through GIT_CONFIG_* variables: never in argv,
    never in .git/config, never in a URL that a log could print."""
    env = {**base, "GIT_TERMINAL_PROMPT": "0"}
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"})
    return env


async def git(cwd: Path, *args: str, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        "git", *args, cwd=str(cwd), env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise GitError(f"git {args[0]} failed ({proc.returncode}): {err.decode(errors='replace').strip()[:1000]}")
    return out.decode(errors="replace").strip()


async def prepare(repo: RepoSpec | None, path: Path, *, agent_id: str, env: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if repo is None:
        path.mkdir(parents=True, exist_ok=True)
        await git(path, "init", "-q", "-b", "main", env=env)
    else:
        if path.exists() and (path / ".git").exists():
            # A retried attempt in the same place starts clean from the registered ref.
            import shutil

            shutil.rmtree(path)
        await git(path.parent, "clone", "-q", "--branch", repo.ref, "--single-branch", repo.url, str(path), env=env)
        if not await continue_run_branch(path, repo.branch, env):
            await git(path, "checkout", "-q", "-b", repo.branch, env=env)
    await git(path, "config", "user.name", f"Nexus agent {agent_id}", env=env)
    await git(path, "config", "user.email", f"{agent_id}@agents.nexus.invalid", env=env)


async def continue_run_branch(path: Path, branch: str, env: dict[str, str]) -> bool:
    """A retried attempt continues from the run branch an earlier attempt already pushed, so its own
    push fast-forwards (and adds no commit when the work is already there). False when none was pushed."""
    if not await git(path, "ls-remote", "--heads", "origin", f"refs/heads/{branch}", env=env):
        return False
    await git(path, "fetch", "-q", "origin", f"refs/heads/{branch}", env=env)
    await git(path, "checkout", "-q", "-B", branch, "FETCH_HEAD", env=env)
    return True


async def has_changes(path: Path, env: dict[str, str]) -> bool:
    return bool(await git(path, "status", "--porcelain", env=env))


async def head(path: Path, env: dict[str, str]) -> str:
    try:
        return await git(path, "rev-parse", "HEAD", env=env)
    except GitError:
        return ""


async def push(path: Path, branch: str, env: dict[str, str]) -> None:
    await git(path, "push", "-q", "origin", f"HEAD:refs/heads/{branch}", env=env)


def base_env(environ: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")} | {"HOME": environ.get("HOME", os.getcwd())}


async def merge_into(path: Path, target: str, env: dict[str, str]) -> str:
    """Bring the pushed run branch into `target` on the remote: fast-forward when the target has not
    moved, else a merge commit on top of the target (a conflict raises GitError). Returns the new sha."""
    await git(path, "fetch", "-q", "origin", f"refs/heads/{target}", env=env)
    ff = await asyncio.create_subprocess_exec(
        "git", "merge-base", "--is-ancestor", "FETCH_HEAD", "HEAD", cwd=str(path), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    if await ff.wait() != 0:
        await git(path, "merge", "-q", "--no-edit", "FETCH_HEAD", env=env)
    await git(path, "push", "-q", "origin", f"HEAD:refs/heads/{target}", env=env)
    return await head(path, env)

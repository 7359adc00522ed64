"""A run without a repository owes its (empty) git repository until something needs git: a run
that writes nothing makes no git directory at all, and one that writes files gets the repository
when it is needed and ends exactly as before — its work committed on `main` under the agent's
identity, the commit in the ledger, git's tools working. The runner runs as its own process
against the real NATS, as the worker starts it."""

import subprocess

import pytest

from tests.agent_runner.test_runner_support import changes, config, final_status, js, read_events, start_runner  # noqa: F401 — fixtures and helpers, used by name

pytestmark = pytest.mark.infra


def _git(git_dir, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


async def test_a_run_that_writes_nothing_makes_no_git_directory(js, nats_url, tmp_path) -> None:
    r = await start_runner(tmp_path, nats_url, config("steps:\n  - say: done\n"))
    assert await r.exit_code() == 0, r.log()
    end = final_status(await read_events(js, r.cfg.run_id))
    assert end["status"] == "succeeded" and end["commit_sha"] == "" and end["branch"] == "", end
    assert r.workspace.is_dir() and not any(r.workspace.iterdir())
    assert not (r.dir / "state" / "git").exists()  # nothing of git made: nothing needed it
    assert sorted(p.name for p in (r.dir / "state").iterdir()) == [f"{r.cfg.session_id}.json"]


async def test_a_run_that_writes_files_commits_them_as_before(js, nats_url, tmp_path) -> None:
    script = (
        "steps:\n"
        "  - tool_calls: [{name: git_status, args: {}}]\n"  # git before any write: the repository is written then
        '  - tool_calls: [{name: write_file, args: {path: src/a.txt, content: "a\\n"}}]\n'
        "  - tool_calls: [{name: git_diff, args: {}}]\n"
        "  - say: wrote a\n"
    )
    r = await start_runner(tmp_path, nats_url, config(script))
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    assert final_status(events)["status"] == "succeeded", final_status(events)
    tools = {e["data"]["tool"]: e["data"] for _, e in events if e["type"] == "run.tool"}
    assert tools["git_status"]["ok"] and tools["git_diff"]["ok"], tools
    [commit] = changes(events, "git-commit")
    git_dir = r.dir / "state" / "git" / "repo.git"
    assert commit["branch"] == "main" and commit["sha"] == _git(git_dir, "rev-parse", "HEAD")
    assert _git(git_dir, "log", "-1", "--format=%an <%ae>") == "Nexus agent agent_t <agent_t@agents.nexus.invalid>"
    assert _git(git_dir, "show", "HEAD:src/a.txt") == "a"
    trailers = _git(git_dir, "log", "-1", "--format=%B")
    assert f"Nexus-Run: {r.cfg.run_id}" in trailers and "Nexus-Ledger: " in trailers
    assert _git(git_dir, "config", "core.worktree") == str(r.workspace)


async def test_a_run_that_writes_a_file_commits_it_without_asking_git_first(js, nats_url, tmp_path) -> None:
    """The first git call is the final commit's own `git status`: the repository is written then."""
    script = "steps:\n  - tool_calls: [{name: write_file, args: {path: b.txt, content: b}}]\n  - say: wrote b\n"
    r = await start_runner(tmp_path, nats_url, config(script))
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    assert final_status(events)["status"] == "succeeded", final_status(events)
    [commit] = changes(events, "git-commit")
    assert commit["sha"] == _git(r.dir / "state" / "git" / "repo.git", "rev-parse", "main")

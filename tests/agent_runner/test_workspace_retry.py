"""A retried attempt continues from the run branch an earlier attempt pushed: its push fast-forwards
and the same work adds no second commit (a fresh branch from the target would be rejected)."""

import subprocess
from pathlib import Path

from nexus.agent_runner import workspace
from nexus.agent_runner.hypervisor import paths
from nexus.events.payloads import RepoSpec
from tests.gitrepo import git, make_bare_repo


async def _attempt(repo: RepoSpec, root: Path, content: str) -> str:
    rg = workspace.RunGit(work_tree=root / "ws", private=root / "private", base={"PATH": "/usr/bin:/bin"})
    await workspace.prepare(repo, rg, agent_id="agt_x", token=None)
    (rg.work_tree / "out.txt").write_text(content)
    if await workspace.has_changes(rg):
        await workspace.git(rg, "add", "-A")
        await workspace.git(rg, "commit", "-q", "-m", "work")
    await workspace.push(rg, repo.branch, None)
    return await workspace.head(rg)


async def test_a_retry_continues_from_the_pushed_run_branch(tmp_path: Path) -> None:
    bare = make_bare_repo(tmp_path)
    repo = RepoSpec(url=str(bare), ref="main", branch="nexus/tsk_1/run_1", target_branch="main")
    first = await _attempt(repo, tmp_path / "a1", "done\n")
    second = await _attempt(repo, tmp_path / "a2", "done\n")
    assert second == first  # nothing new to commit: the branch keeps its one commit
    third = await _attempt(repo, tmp_path / "a3", "more\n")
    assert git(tmp_path, "--git-dir", str(bare), "rev-list", "--count", f"main..{repo.branch}") == "2"
    assert git(tmp_path, "--git-dir", str(bare), "rev-parse", f"{third}^") == first


async def test_a_retry_in_the_same_place_clears_a_tree_deeper_than_any_recursion(tmp_path: Path) -> None:
    """An earlier attempt's commands left a tree 1,500 directories deep (`mkdir -p` in the sandbox); the
    next attempt in the same place starts from a clean work tree all the same."""
    bare = make_bare_repo(tmp_path)
    repo = RepoSpec(url=str(bare), ref="main", branch="nexus/tsk_1/run_2", target_branch="main")
    rg = workspace.RunGit(work_tree=tmp_path / "ws", private=tmp_path / "private", base={"PATH": "/usr/bin:/bin"})
    await workspace.prepare(repo, rg, agent_id="agt_x", token=None)
    subprocess.run(["mkdir", "-p", "d/" * 1500], cwd=rg.work_tree, check=True)
    try:
        await workspace.prepare(repo, rg, agent_id="agt_x", token=None)
        assert not (rg.work_tree / "d").exists()
        assert await workspace.head(rg)
    finally:  # pytest's own cleanup (shutil.rmtree) would meet the tree if the fix did not
        paths.remove_tree(rg.work_tree)

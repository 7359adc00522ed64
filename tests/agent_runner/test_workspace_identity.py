"""The workspace's git identity and `core.bare false` are written into the git directory's config
file directly (no `git config` processes): git itself must read them back, with and without a clone,
and a value git would misread (a quote, a backslash) is quoted, a line break refused."""

from pathlib import Path

import pytest

from nexus.agent_runner import workspace
from nexus.events.payloads import RepoSpec
from tests.gitrepo import make_bare_repo


def _rg(root: Path) -> workspace.RunGit:
    return workspace.RunGit(work_tree=root / "ws", private=root / "private", base={"PATH": "/usr/bin:/bin"})


async def _config(rg: workspace.RunGit, key: str) -> str:
    return await workspace.git(rg, "config", "--get", key)


@pytest.mark.parametrize("with_repo", [False, True])
async def test_git_reads_the_identity_the_runner_wrote(tmp_path: Path, with_repo: bool) -> None:
    repo = (
        RepoSpec(url=str(make_bare_repo(tmp_path)), ref="main", branch="nexus/t/r", target_branch="main")
        if with_repo
        else None
    )
    rg = _rg(tmp_path)
    await workspace.prepare(repo, rg, agent_id="agt_1", token=None)
    assert await _config(rg, "user.name") == "Nexus agent agt_1"
    assert await _config(rg, "user.email") == "agt_1@agents.nexus.invalid"
    assert await _config(rg, "core.bare") == "false"
    (rg.work_tree / "a.txt").write_text("a\n")
    await workspace.git(rg, "add", "-A")
    await workspace.git(rg, "commit", "-q", "-m", "work")
    assert (
        await workspace.git(rg, "log", "-1", "--format=%an <%ae>") == "Nexus agent agt_1 <agt_1@agents.nexus.invalid>"
    )


async def test_awkward_values_are_quoted_and_line_breaks_refused(tmp_path: Path) -> None:
    rg = _rg(tmp_path)
    await workspace.prepare(None, rg, agent_id="agt_1", token=None)
    rg.sealed = ""  # as while preparing: the runner writes before it seals
    workspace.write_identity(rg, name='a "b" \\ c; #d', email="e@x")
    assert await _config(rg, "user.name") == 'a "b" \\ c; #d'
    with pytest.raises(workspace.GitError):
        workspace.write_identity(rg, name="a\n[core]\n\tbare = true", email="e@x")


async def test_the_written_repository_is_what_git_init_makes(tmp_path: Path) -> None:
    """A run without a repository gets its empty repository written by the runner (no `git init`
    process): every setting git init would write, the same branch, and git works in it as in one it made."""
    made = _rg(tmp_path / "by-git")
    made.work_tree.mkdir(parents=True)
    made.private.mkdir(parents=True)
    await workspace.git(made, "init", "-q", "-b", "main")
    ours = _rg(tmp_path / "by-runner")
    await workspace.prepare(None, ours, agent_id="agt_1", token=None)
    ours.sealed = ""

    async def settings(rg: workspace.RunGit) -> set[str]:
        listed = await workspace.git(rg, "config", "--local", "--list")
        return {
            line.replace(str(rg.work_tree), "<work tree>")
            for line in listed.splitlines()
            if not line.startswith("user.")
        }

    assert await settings(ours) == await settings(made)
    assert await workspace.git(ours, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert await workspace.git(ours, "rev-parse", "--show-toplevel") == str(ours.work_tree)
    assert await workspace.head(ours) == ""  # no commit yet, as after git init
    assert not await workspace.has_changes(ours)
    (ours.work_tree / "a.txt").write_text("a\n")
    assert await workspace.has_changes(ours)
    await workspace.git(ours, "add", "-A")
    await workspace.git(ours, "commit", "-q", "-m", "work")
    assert await workspace.git(ours, "fsck", "--strict") == ""
    assert await workspace.git(ours, "rev-parse", "--abbrev-ref", "HEAD") == "main"


async def test_a_run_without_a_repository_makes_only_what_git_needs(tmp_path: Path) -> None:
    """Every directory a run makes costs it an inode: the written repository holds only what git needs
    to see one, git's HOME is made by the first git process, and git makes the rest when it writes."""
    rg = _rg(tmp_path)
    await workspace.prepare(None, rg, agent_id="agt_1", token=None)
    assert sorted(p.name for p in rg.git_dir.iterdir()) == ["HEAD", "config", "objects", "refs"]
    assert sorted(p.name for p in rg.private.iterdir()) == ["repo.git"]
    (rg.work_tree / "a.txt").write_text("a\n")
    assert await workspace.has_changes(rg)
    assert (rg.private / "home").is_dir() and (rg.private / "home").stat().st_mode & 0o777 == 0o700
    await workspace.git(rg, "add", "-A")
    await workspace.git(rg, "commit", "-q", "-m", "work")
    await workspace.git(rg, "tag", "v1")
    await workspace.git(rg, "gc", "-q")
    assert await workspace.git(rg, "fsck", "--strict") == ""
    assert await workspace.git(rg, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert await workspace.git(rg, "tag", "--list") == "v1"

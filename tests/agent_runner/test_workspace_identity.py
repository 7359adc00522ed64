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
    rg.ensure()  # the owed repository, written
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
    ours.ensure()
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
    """Every directory a run makes costs it an inode: a run without a repository makes none for git
    until git is first needed; then the written repository holds only what git needs to see one,
    git's HOME is made by the first git process, and git makes the rest when it writes."""
    rg = _rg(tmp_path)
    await workspace.prepare(None, rg, agent_id="agt_1", token=None)
    assert rg.owed and not rg.private.exists()  # nothing of git made yet
    assert [p.name for p in tmp_path.iterdir()] == ["ws"]
    (rg.work_tree / "a.txt").write_text("a\n")
    assert await workspace.has_changes(rg)  # the first git call writes the repository, then runs
    assert not rg.owed
    assert sorted(p.name for p in rg.git_dir.iterdir()) == ["HEAD", "config", "objects", "refs"]
    assert sorted(p.name for p in rg.private.iterdir()) == ["home", "repo.git"]
    assert rg.private.stat().st_mode & 0o777 == 0o700 and rg.git_dir.stat().st_mode & 0o777 == 0o700
    assert (rg.private / "home").is_dir() and (rg.private / "home").stat().st_mode & 0o777 == 0o700
    await workspace.git(rg, "add", "-A")
    await workspace.git(rg, "commit", "-q", "-m", "work")
    await workspace.git(rg, "tag", "v1")
    await workspace.git(rg, "gc", "-q")
    assert await workspace.git(rg, "fsck", "--strict") == ""
    assert await workspace.git(rg, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert await workspace.git(rg, "tag", "--list") == "v1"


async def test_a_git_directory_the_runner_did_not_write_is_refused(tmp_path: Path) -> None:
    """The owed repository is written into a git directory that must not exist yet: one planted before
    the runner needed git (by anything but the runner) is never adopted, and git stays refused after."""
    rg = _rg(tmp_path)
    await workspace.prepare(None, rg, agent_id="agt_1", token=None)
    rg.git_dir.mkdir(parents=True)
    (rg.git_dir / "config").write_text("[core]\n\tfsmonitor = touch /tmp/pwned\n")
    with pytest.raises(workspace.GitError, match="exists before the runner wrote it"):
        await workspace.has_changes(rg)
    with pytest.raises(workspace.GitError, match="changed outside the runner"):
        await workspace.has_changes(rg)  # not retried into adopting it: refused for good


async def test_a_retried_attempt_forgets_the_owed_repository_of_the_last(tmp_path: Path) -> None:
    """An attempt prepared again in the same place starts from nothing, whatever the last one wrote."""
    rg = _rg(tmp_path)
    await workspace.prepare(None, rg, agent_id="agt_1", token=None)
    (rg.work_tree / "a.txt").write_text("a\n")
    await workspace.git(rg, "add", "-A")
    await workspace.git(rg, "commit", "-q", "-m", "first attempt")
    await workspace.prepare(None, rg, agent_id="agt_1", token=None)
    assert rg.owed and not rg.git_dir.exists() and not any(rg.work_tree.iterdir())
    assert await workspace.head(rg) == ""  # a fresh repository: no commit of the last attempt

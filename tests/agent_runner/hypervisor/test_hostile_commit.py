"""What git_commit checks it checks whole: the staged paths are read entire before any is judged."""

from typing import Any

from nexus.domain.sessions import GitCommitChange, RefusedChange

MANY_THEN_SECRET = (
    "import os\n"
    "for i in range(1000):\n"
    "    open('a' * 90 + str(i), 'w').close()\n"
    "open('zz-' + os.environ['K'], 'w').close()\n"
)


async def test_a_secret_in_a_path_past_the_output_cap_is_not_committed(sandbox: Any, git_cmd: Any) -> None:
    """A thousand long names first (~92 KiB of them), then one holding the secret's value (a command gets
    the value by its environment and names a file with it): the staged names were read up to the output
    cap (64 KiB), so the last was never checked, and the commit carried the value on the run's branch."""
    hv = sandbox.make()
    (sandbox.ws / "mk.py").write_text(MANY_THEN_SECRET)
    made = await hv.call("run_command", {"cmd": f"K=${{secret:{sandbox.SECRET_NAME}}} python3 mk.py"})
    assert made.ok, made.error
    result = await hv.call("git_commit", {"message": "many files"})
    assert not result.ok and result.error.startswith("refused (secret-in-path)"), result
    assert sandbox.SECRET not in git_cmd(sandbox.ws, "log", "--all", "--name-only", "--format=")
    assert isinstance(sandbox.session.changes[-1], RefusedChange)
    assert not any(isinstance(c, GitCommitChange) for c in sandbox.session.changes)
    assert sandbox.SECRET not in git_cmd(sandbox.ws, "diff", "--cached", "--name-only")  # unstaged again
    sandbox.assert_recorded()


async def test_a_patch_naming_more_files_than_git_s_report_holds_is_refused_whole(sandbox: Any) -> None:
    """git's list of what a patch touches is read up to the output cap: the files past it were neither
    checked nor written, and the patch was reported applied to the rest."""
    hv = sandbox.make()
    files = [f"{'p' * 90}{i}.txt" for i in range(1000)]
    patch = "".join(f"--- /dev/null\n+++ b/{name}\n@@ -0,0 +1 @@\n+x\n" for name in files)
    result = await hv.call("apply_patch", {"patch": patch})
    assert not result.ok and result.error.startswith("refused (too-large)"), result.error[:300]
    assert not any((sandbox.ws / name).exists() for name in files)
    sandbox.assert_recorded()


MiB = 1 << 20
BLOB = "import os, sys\nopen('blob', 'wb').write(os.urandom(int(sys.argv[1]) << 20))\n"


def _bytes_under(path: Any) -> int:
    return sum(max(f.stat().st_size, f.stat().st_blocks * 512) for f in path.rglob("*") if f.is_file())


async def test_commits_fill_the_disk_no_further_than_the_budget(sandbox: Any) -> None:
    """Write a file, commit it, remove it, again: the work tree stays within the disk budget, but each
    commit left its content in the repository's objects, outside the work tree, which nothing counted.
    Six rounds of 24 MiB put 144 MiB on the machine's disk under a budget of 32 MiB. Now a commit's
    objects count against the budget, and once it is used up the next commit is refused."""
    hv = sandbox.make(disk_budget=32 * MiB)
    objects = sandbox.root / "gitdir" / "objects"
    before = _bytes_under(objects)
    (sandbox.ws / "blob.py").write_text(BLOB)
    refused = []
    for round_ in range(6):
        wrote = await hv.call("run_command", {"cmd": "python3 blob.py 24", "timeout_s": 60})
        committed = await hv.call("git_commit", {"message": f"round {round_}"})
        if not committed.ok:
            assert committed.error.startswith("refused (disk-budget)"), (wrote, committed)
            refused.append(round_)
        removed = await hv.call("run_command", {"cmd": "rm -f blob"})
        assert removed.ok, removed.error
    assert refused, "every commit was taken"
    # At most the budget, plus what the one commit that used it up added (a work tree's worth).
    assert _bytes_under(objects) - before <= 2 * 32 * MiB
    sandbox.assert_recorded()

"""Through the real runner: a work tree an agent shaped so that the runner's own git calls (its `git
status` before the final commit, the canary's reads, the push) would run for hours. Each such call is
bounded (NEXUS_GIT_TIMEOUT_S), ended with what it started, recorded, and the run fails saying so."""

import os
import resource
import uuid
from pathlib import Path

import pytest

from tests.agent_runner.test_runner_hostile_git import SECRETS, _planting_cfg, _repo, _script
from tests.agent_runner.test_runner_support import (  # noqa: F401 — pytest fixtures, used as parameters
    bare_repo,
    changes,
    config,
    final_status,
    git,
    js,
    read_events,
    start_runner,
)

pytestmark = pytest.mark.infra

# 50,000 files under a .gitignore of a million patterns that never match: git matches every file against
# every pattern, 5 * 10^10 matches for one `git status` (a quarter of an hour on this machine), made in
# seconds and well within the disk budget (20 MB).
SLOW_STATUS_PLANT = """import os
os.makedirs("many")
for i in range(50_000):
    open(f"many/f{i}.txt", "w").close()
with open(".gitignore", "w") as fh:
    fh.write("".join(f"*nomatch{i}*x\\n" for i in range(1_000_000)))
"""


def _gits_in(workspace: Path) -> list[int]:
    """Processes still working in the run's work tree (a git the runner left running)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(str(workspace)):
                found.append(int(pid))
        except OSError:
            continue
    return found


async def _planted(tmp_path, nats_url: str, plant: str, **options):
    """A runner whose agent writes `plant` and runs it, then ends (commit, canary, push): the runner and
    the bare repository it pushes to."""
    bare = bare_repo(tmp_path)
    script = _script(
        [("write_file", {"path": "plant.py", "content": plant})],
        [("run_command", {"cmd": "python3 plant.py", "timeout_s": 120})],
    )
    cfg = _planting_cfg(script, f"run_{uuid.uuid4().hex[:16]}", bare)
    return await start_runner(tmp_path, nats_url, cfg, secrets=SECRETS, **options), bare


async def test_a_work_tree_that_stalls_the_runners_git_fails_the_run_instead_of_hanging(js, nats_url, tmp_path) -> None:
    """The runner's `git status` before its final commit had no bound: the run hung in it until its wall
    clock (30 minutes by default), reported as a timeout of the run, and the git process, never ended,
    went on after the runner. Now it is ended at the bound, recorded as a refused commit (`git-timeout`),
    and the run fails naming it; nothing is pushed."""
    r, bare = await _planted(tmp_path, nats_url, SLOW_STATUS_PLANT, env={"NEXUS_GIT_TIMEOUT_S": "3"})
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    assert [(c["tool"], c["reason"]) for c in changes(events, "refused")] == [("commit", "git-timeout")], events
    end = final_status(events)
    assert end["status"] == "failed" and "git status did not finish within 3 s" in end["reason"], end
    assert git(bare, "for-each-ref", "--format=%(refname)", "refs/heads").split() == ["refs/heads/main"]
    assert _gits_in(r.workspace) == []


async def test_a_run_ended_by_its_wall_clock_in_the_runners_git_leaves_no_git_running(js, nats_url, tmp_path) -> None:
    """The run's wall clock ends it in the middle of that `git status`: git, which had no bound and was
    never ended, went on for a quarter of an hour after the runner had gone. Now it ends with the run."""
    bare = bare_repo(tmp_path)
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    script = _script(
        [("write_file", {"path": "plant.py", "content": SLOW_STATUS_PLANT})],
        [("run_command", {"cmd": "python3 plant.py", "timeout_s": 120})],
    )
    cfg = config(
        script,
        run_id=run_id,
        permissions={"commands": {"allow": ["python3 plant.py"], "default": "deny"}},
        secrets=sorted(SECRETS),
        limits={"max_steps": 20, "wall_clock_s": 30},
        repo=_repo(bare, run_id),
    )
    r = await start_runner(tmp_path, nats_url, cfg, secrets=SECRETS)
    assert await r.exit_code() != 0, r.log()
    end = final_status(await read_events(js, run_id))
    assert end["status"] == "timed_out", end
    assert _gits_in(r.workspace) == []


BIG_FILE_PLANT = """with open("big.bin", "wb") as fh:
    for _ in range(600):
        fh.write(bytes(1 << 20))
"""


async def test_a_commit_larger_than_the_runners_memory_is_checked_and_pushed(js, nats_url, tmp_path) -> None:
    """The canary read every outgoing object through one `git cat-file --batch` held whole in memory (and
    copied once more): a 600 MiB file (within the disk budget; a few hundred KiB compressed) ended a
    runner limited to 1 GiB of address space in a MemoryError before its push. It is read a chunk at a time."""
    r, bare = await _planted(tmp_path, nats_url, BIG_FILE_PLANT, rlimits={resource.RLIMIT_AS: 1 << 30})
    assert await r.exit_code() == 0, r.log()
    end = final_status(await read_events(js, r.cfg.run_id))
    assert end["status"] == "succeeded", end
    size = git(bare, "cat-file", "-s", f"refs/heads/{r.cfg.repo.branch}:big.bin")
    assert int(size) == 600 << 20

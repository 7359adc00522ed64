"""The hypervisor's private rooms (its directory, scratch, the commands' HOME, git's HOME) are made,
0700, when a process or a scratch file first needs them: a session that runs nothing makes none (each
directory costs a run an inode), and a command always finds its HOME."""

import stat
from pathlib import Path

import pytest

from nexus.agent_runner.hypervisor import sandbox as sandbox_mod

ROOMS = ("", "scratch", "home", "git-home")
WRITE_HOME = "python3 -c \"import os; open(os.path.join(os.environ['HOME'], 'mark'), 'w').write('made')\""


def _private_rooms(private: Path) -> dict[str, int]:
    return {name: stat.S_IMODE((private / name).stat().st_mode) for name in ROOMS if (private / name).is_dir()}


async def test_no_rooms_until_a_command_runs_then_all_private(sandbox, tmp_path: Path) -> None:
    private = tmp_path / "hv-private"
    hv = sandbox.make(private_dir=private, sandbox_mode="none")
    assert not private.exists()
    await hv.call("write_file", {"path": "notes.txt", "content": "no process needed\n"})
    assert not private.exists()
    result = await hv.call("run_command", {"cmd": "true"})
    assert result.ok, result
    assert _private_rooms(private) == {name: 0o700 for name in ROOMS}


async def test_a_confined_command_gets_the_hypervisors_home(sandbox, tmp_path: Path) -> None:
    """bwrap binds the commands' HOME only when it exists: made before the first command decides."""
    if sandbox_mod.detect("auto") != "bwrap":
        pytest.skip("bubblewrap cannot create namespaces here")
    private = tmp_path / "hv-private"
    hv = sandbox.make(private_dir=private, sandbox_mode="bwrap")
    result = await hv.call("run_command", {"cmd": WRITE_HOME})
    assert result.ok, result
    assert (private / "home" / "mark").read_text() == "made"


async def test_git_and_search_make_the_rooms_they_use(sandbox, tmp_path: Path) -> None:
    for tool, args in (("git_status", {}), ("search_text", {"pattern": "hello", "path": "."})):
        private = tmp_path / f"hv-{tool}"
        hv = sandbox.make(private_dir=private)
        result = await hv.call(tool, args)
        assert result.ok, (tool, result)
        assert _private_rooms(private) == {name: 0o700 for name in ROOMS}, tool

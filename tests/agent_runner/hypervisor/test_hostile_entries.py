"""A command that makes entries, not bytes: empty files, directories and links cost the machine an inode
and a directory entry each and hold no byte the disk budget counts. The walk that records a command's
changes follows at most `changeset.MAX_ENTRIES` of them; a command that passes that is ended when it
does (not at its timeout, millions of inodes later), and only rm runs until they are removed."""

from typing import Any

import pytest

from nexus.agent_runner.hypervisor import changeset
from nexus.domain.sessions import CommandRunChange

ENDLESS_ENTRIES = (
    "import os, sys\n"
    "kind = sys.argv[1]\n"
    "os.mkdir('flood')\n"
    "i = 0\n"
    "while True:\n"
    "    name = f'flood/{i}'\n"
    "    if kind == 'files':\n"
    "        os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644))\n"
    "    elif kind == 'dirs':\n"
    "        os.mkdir(name)\n"
    "    else:\n"
    "        os.symlink('x', name)\n"
    "    i += 1\n"
)


@pytest.mark.parametrize("kind", ["files", "dirs", "links"])
async def test_a_command_making_endless_empty_entries_is_ended_when_the_walk_cannot_follow(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Each entry is 0 bytes (a link's few bytes, a directory's block): the bytes never near the budget,
    so only the command's timeout used to end it, the machine's inodes going meanwhile."""
    monkeypatch.setattr(changeset, "MAX_ENTRIES", 20_000)
    hv = sandbox.make()
    (sandbox.ws / "flood.py").write_text(ENDLESS_ENTRIES)
    result = await hv.call("run_command", {"cmd": f"python3 flood.py {kind}", "timeout_s": 120})
    assert not result.ok and result.error.startswith("refused (workspace-too-large)"), result
    assert "it was ended" in result.error
    run = next(c for c in reversed(sandbox.session.changes) if isinstance(c, CommandRunChange))
    assert run.exit_code != 124  # not its timeout
    blocked = await hv.call("run_command", {"cmd": "touch more"})
    assert not blocked.ok and "workspace-too-large" in blocked.error
    removed = await hv.call("run_command", {"cmd": "rm -rf flood"})
    assert removed.ok, removed.error
    after = await hv.call("run_command", {"cmd": "touch more"})
    assert after.ok, after.error
    sandbox.assert_recorded()


LONG_NAMES = (
    "import os\n"
    "deep = os.path.join('long', *(c * 250 for c in 'abcdefghijklmno'))\n"  # ~3,800 bytes of path
    "os.makedirs(deep)\n"
    "for i in range(40_000):\n"
    "    os.close(os.open(os.path.join(deep, f'{i:06d}' + 'x' * 150), os.O_CREAT | os.O_WRONLY, 0o644))\n"
)


async def test_a_command_making_files_at_the_end_of_long_paths_is_ended_before_their_names_fill_memory(
    sandbox: Any,
) -> None:
    """Entries well within MAX_ENTRIES, but each at the end of a path of ~4,000 bytes: the walks around a
    command keep every path, so 40,000 of them were 160 MB of names held twice (and 150,000 past a
    runner's memory limit). The walk keeps at most MAX_NAME_BYTES of names: past them the command is
    ended and only rm runs, as past MAX_ENTRIES."""
    hv = sandbox.make()
    (sandbox.ws / "names.py").write_text(LONG_NAMES)
    result = await hv.call("run_command", {"cmd": "python3 names.py", "timeout_s": 120})
    assert not result.ok and result.error.startswith("refused (workspace-too-large)"), result
    assert "paths are longer than" in result.error
    removed = await hv.call("run_command", {"cmd": "rm -rf long"})
    assert removed.ok, removed.error
    after = await hv.call("run_command", {"cmd": "touch more"})
    assert after.ok, after.error
    sandbox.assert_recorded()

"""A command's /tmp and /dev/shm are the run's disk, not the machine's memory: what a hostile command
stashes there (bytes in files, extended attributes on empty files) counts against the run's disk budget.
They were tmpfs mounts of bwrap's: 256 MiB of bytes each, outside the budget, and past that an inode per
empty file and 64 KiB of extended attributes per inode with no cap at all (a 256 MiB /tmp held 3 GiB of
them: kernel memory, uncounted where no memory cgroup can be made)."""

from typing import Any

import pytest

from nexus.domain.sessions import CommandRunChange

MiB = 1 << 20
BUDGET = 16 * MiB
TRIED = 512 * MiB  # what the command tries to stash in each place: far past the budget

STASH = """
import os, sys
place, kind, tried = {'tmp': '/tmp', 'shm': '/dev/shm'}[sys.argv[1]], sys.argv[2], int(sys.argv[3])  # the policy reads no script
if kind == 'list':
    print(os.listdir(place))
    sys.exit()
held = 0
try:
    for i in range(1 << 20):
        if held >= tried:
            break
        path = f'{place}/stash{i}'
        if kind == 'bytes':
            with open(path, 'wb') as fh:
                fh.write(b'x' * (1 << 20))
            held += 1 << 20
        else:  # an empty file: no byte of its size, only its inode and what hangs on it
            open(path, 'wb').close()
            os.setxattr(path, 'user.stash', b'y' * 65536)
            held += 65536
except OSError as exc:
    print('STOPPED', exc.strerror)
print('HELD', held)
"""


@pytest.mark.parametrize("kind", ["bytes", "xattrs"])
@pytest.mark.parametrize("place", ["tmp", "shm"])
async def test_a_commands_temporary_directories_hold_no_more_than_the_disk_budget(
    sandbox: Any, place: str, kind: str
) -> None:
    hv = sandbox.make(disk_budget=BUDGET)
    if hv.sandbox != "bwrap":
        pytest.skip("the other modes' temporary directory was already in the HOME room")
    (sandbox.ws / "stash.py").write_text(STASH)
    result = await hv.call("run_command", {"cmd": f"python3 stash.py {place} {kind} {TRIED}", "timeout_s": 120})
    assert any(isinstance(c, CommandRunChange) for c in sandbox.session.changes), result  # it ran
    if result.ok:  # it ended by itself: the file system refused what passed the budget
        held = int(result.output.split("HELD ")[1].split()[0])
        assert held <= BUDGET, result.output
    else:  # ended by the disk budget's watch
        assert result.error.startswith("refused (disk-budget)"), result.error
    after = await hv.call(
        "run_command", {"cmd": f"python3 stash.py {place} list 0"}
    )  # nothing is left for the next command
    assert after.ok and "stash" not in after.output, after
    sandbox.assert_recorded()

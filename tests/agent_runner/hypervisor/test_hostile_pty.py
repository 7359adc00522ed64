"""A command cannot use up the machine's pseudo-terminals. The kernel has one count of them for every
devpts instance (`kernel.pty.max`, 4096 by default, 1,024 of them held back for the first mount
namespace's instance): bwrap's `--dev` gives the command a devpts of its own, with no `max=`, so a command
opening `/dev/ptmx` in a loop (across forks past its open-file limit) got every pty it asked for, up to
the 3,072 the kernel leaves other mount namespaces, and every other container's terminal, ssh login or
`script` could fail until it ended. The test asks for 64 only: it must not take the box's terminals."""

import os
from typing import Any

import pytest

from nexus.agent_runner.hypervisor import sandbox as sandbox_mod

TRIED = 64  # far fewer than the machine has: the test must not take the box's terminals itself

GRAB = """
import os, sys
held = []
for i in range(int(sys.argv[1])):
    try:
        held.append(os.openpty())
    except OSError as exc:
        print('STOPPED', exc.strerror)
        break
print('HELD', len(held))
"""


@pytest.mark.parametrize("mode", ["bwrap", "landlock"])
async def test_a_command_opening_ptys_in_a_loop_takes_none_of_the_machines(sandbox: Any, mode: str) -> None:
    if sandbox_mod.detect(mode) != mode:
        pytest.skip(f"{mode} is not available here")
    hv = sandbox.make(sandbox_mode=mode)
    (sandbox.ws / "grab.py").write_text(GRAB)
    result = await hv.call("run_command", {"cmd": f"python3 grab.py {TRIED}", "timeout_s": 60})
    assert result.ok, result
    assert "HELD 0" in result.output, result.output  # no command needs a terminal: it gets none
    master, slave = os.openpty()  # the machine's own still open
    os.close(master)
    os.close(slave)
    sandbox.assert_recorded()

"""An agent cannot fill the disk: the bytes it may add to its workspace and the commands' HOME are a
budget, kept by the file tools (a write past it is refused), by each command's file-size limit (what is
left of it), by a watch that ends a command writing past it, and by the sum taken after each command.
Once it is used up only rm runs; the refusals are recorded and the run goes on."""

from typing import Any

import pytest

from nexus.agent_runner.hypervisor import Hypervisor
from nexus.domain.sessions import CommandRunChange, FileWriteChange, RefusedChange

MiB = 1 << 20


def _make(box: Any, budget: int) -> Hypervisor:
    return box.make(disk_budget=budget)


def _refused(box: Any, result: Any) -> RefusedChange:
    assert not result.ok and result.error.startswith("refused (disk-budget)"), result
    refusal = box.session.changes[-1]
    assert isinstance(refusal, RefusedChange) and refusal.reason == "disk-budget"
    return refusal


async def test_a_write_past_the_budget_is_refused_and_shrinking_is_not(sandbox: Any) -> None:
    hv = _make(sandbox, 1 * MiB)
    first = await hv.call("write_file", {"path": "a.txt", "content": "x" * (600 << 10)})
    assert first.ok, first.error
    second = await hv.call("write_file", {"path": "b.txt", "content": "y" * (600 << 10)})
    _refused(sandbox, second)
    assert not (sandbox.ws / "b.txt").exists()
    again = await hv.call("write_file", {"path": "a.txt", "content": "z" * (600 << 10)})  # adds nothing
    assert again.ok, again.error
    smaller = await hv.call("write_file", {"path": "a.txt", "content": "small"})
    assert smaller.ok
    now = await hv.call("write_file", {"path": "b.txt", "content": "y" * (600 << 10)})
    assert now.ok, now.error
    sandbox.assert_recorded()


async def test_one_huge_file_from_a_command_stops_at_the_budget(sandbox: Any) -> None:
    hv = _make(sandbox, 8 * MiB)
    result = await hv.call("run_command", {"cmd": "dd if=/dev/zero of=big bs=1M count=200", "timeout_s": 60})
    _refused(sandbox, result)
    assert (sandbox.ws / "big").stat().st_size <= 8 * MiB  # the file-size limit: what was left
    run = next(c for c in reversed(sandbox.session.changes) if isinstance(c, CommandRunChange))
    assert run.files_changed == 1
    assert any(isinstance(c, FileWriteChange) and c.rel_path == "big" for c in sandbox.session.changes)
    blocked = await hv.call("run_command", {"cmd": "touch more"})
    _refused(sandbox, blocked)
    assert not (sandbox.ws / "more").exists()
    removed = await hv.call("run_command", {"cmd": "rm big"})
    assert removed.ok, removed.error
    after = await hv.call("run_command", {"cmd": "touch more"})
    assert after.ok, after.error
    sandbox.assert_recorded()


ENDLESS = (
    "import os, sys, time\n"
    "where = os.environ['HOME'] if sys.argv[1] == 'home' else '.'\n"
    "for i in range(100_000):\n"
    "    with open(os.path.join(where, f'f{i}'), 'wb') as fh:\n"
    "        fh.write(b'x' * (1 << 20))\n"
    "        fh.flush(); os.fsync(fh.fileno())\n"
    "    time.sleep(0.1)\n"
)


@pytest.mark.parametrize(
    ("where", "mode"), [("workspace", "auto"), ("home", "bwrap"), ("home", "landlock"), ("home", "none")]
)
async def test_a_command_writing_many_small_files_is_ended_at_the_budget(sandbox: Any, where: str, mode: str) -> None:
    """Each file is far under the file-size limit; together they pass the budget, and the command is ended
    then (without the watch it would run to its timeout). HOME is the hypervisor's room under bwrap, and
    a directory of the command's own in it under Landlock and none (it used to be in the machine's /tmp,
    which no budget counted)."""
    from nexus.agent_runner.hypervisor import sandbox as sandbox_mod

    if mode != "auto" and sandbox_mod.detect(mode) != mode:
        pytest.skip(f"{mode} is not available here")
    hv = sandbox.make(disk_budget=8 * MiB, sandbox_mode=mode)
    (sandbox.ws / "fill.py").write_text(ENDLESS)
    result = await hv.call("run_command", {"cmd": f"python3 fill.py {where}", "timeout_s": 20})
    refusal = _refused(sandbox, result)
    assert "it was ended" in refusal.detail
    after = await hv.call("write_file", {"path": "x.txt", "content": "x"})
    if where == "home" and mode in ("landlock", "none"):
        assert after.ok, after.error  # that HOME was the command's own, removed after it: the bytes are back
    else:
        _refused(sandbox, after)
    sandbox.assert_recorded()


DEEP = """
import os
for _ in range(300):
    os.mkdir('d' * 40)
    os.chdir('d' * 40)
with open('hidden.bin', 'wb') as fh:
    fh.write(b'x' * (4 << 20))
print('written')
"""


async def test_files_past_the_longest_path_are_neither_hidden_from_the_record_nor_from_the_budget(
    sandbox: Any,
) -> None:
    """A tree deeper than PATH_MAX (12,000 characters here): the walk used to skip what it could not open
    by its path, so the file's write was never recorded, nor counted against the budget, and the next
    command and write ran as if nothing had happened."""
    hv = _make(sandbox, 8 * MiB)
    (sandbox.ws / "deep.py").write_text(DEEP)
    result = await hv.call("run_command", {"cmd": "python3 deep.py"})
    assert not result.ok and result.error.startswith("refused (workspace-too-large)"), result
    assert "could not be read" in result.error
    assert isinstance(sandbox.session.changes[-2], CommandRunChange)
    for call, args in [("run_command", {"cmd": "touch more"}), ("write_file", {"path": "y.txt", "content": "y"})]:
        blocked = await hv.call(call, args)
        assert not blocked.ok, (call, blocked)
    removed = await hv.call("run_command", {"cmd": "rm -rf " + "d" * 40})
    assert removed.ok, removed.error
    now = await hv.call("write_file", {"path": "y.txt", "content": "y"})
    assert now.ok, now.error
    sandbox.assert_recorded()


async def test_blocks_reserved_past_a_file_end_count_against_the_budget(sandbox: Any) -> None:
    """`fallocate --keep-size` takes disk blocks without growing the file's length, which neither the
    file-size limit nor a sum of lengths sees: the budget counts the blocks a file holds."""
    hv = _make(sandbox, 8 * MiB)
    made = await hv.call("run_command", {"cmd": "touch f"})
    assert made.ok, made.error
    result = await hv.call("run_command", {"cmd": "fallocate --keep-size --length 64MiB f"})
    _refused(sandbox, result)
    assert (sandbox.ws / "f").stat().st_blocks * 512 >= 64 * MiB  # the command did take them
    blocked = await hv.call("write_file", {"path": "x.txt", "content": "x"})
    _refused(sandbox, blocked)

"""The session state file at the session's end: fsynced when it holds a ledger (the session recorded a
change), written without the fsync when there is nothing of a ledger to keep — the whole file is
written either way."""

import os
from typing import Any

import pytest

from nexus.agent_runner.hypervisor.state import read_state


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


async def test_a_session_without_changes_is_written_without_an_fsync(sandbox: Any, fsyncs: list[int]) -> None:
    hv = sandbox.make()
    hv.seal_state()
    assert fsyncs == []
    assert read_state(sandbox.state_file).session_id == sandbox.session.session_id


async def test_a_session_with_a_ledger_is_made_durable(sandbox: Any, fsyncs: list[int]) -> None:
    hv = sandbox.make()
    assert (await hv.call("write_file", {"path": "a.txt", "content": "a\n"})).ok
    fsyncs.clear()  # the change's own write is not fsynced; the session's end is
    hv.seal_state()
    assert len(fsyncs) == 1
    assert [type(c).__name__ for c in read_state(sandbox.state_file).changes] == ["FileWriteChange"]


MANY_LONG_NAMES = (
    "import os, sys\n"
    "d = os.path.join('n' + sys.argv[1], *('d' * 240 for _ in range(3)))\n"
    "os.makedirs(d)\n"
    "for i in range(200):\n"
    "    open(os.path.join(d, f'{i:03d}' + 'f' * 200), 'w').close()\n"
)


def _written() -> int:
    """Bytes this process has written so far (the hypervisor runs in it; its commands do not)."""
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("wchar:"))


async def test_the_state_file_costs_writes_in_proportion_to_the_ledger_not_its_square(sandbox: Any) -> None:
    """Each change rewrote the whole state file: a ledger of n changes cost n^2/2 changes' worth of writes.
    An agent that makes 200 files a command (each one a change, under paths of ~1 KB) made 1 MB of ledger
    cost 600 MB of writes in five commands, and every later change cost a rewrite of all of it (~1,000
    commands' worth in a run: terabytes, the disk of every run on the machine). Now a change is appended
    to the file's journal, and the whole file written when the session ends."""
    hv = sandbox.make()
    (sandbox.ws / "names.py").write_text(MANY_LONG_NAMES)
    before = _written()
    for i in range(5):
        result = await hv.call("run_command", {"cmd": f"python3 names.py {i}"})
        assert result.ok, result.error
    hv.seal_state()
    written = _written() - before
    ledger = sandbox.state_file.stat().st_size
    assert len(sandbox.session.changes) > 1000 and ledger > 1 << 20
    assert written < 10 * ledger, (written, ledger)
    sandbox.assert_recorded()

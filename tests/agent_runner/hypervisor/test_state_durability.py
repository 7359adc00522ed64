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

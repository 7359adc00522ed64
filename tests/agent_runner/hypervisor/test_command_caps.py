"""A command cannot start more processes than its cap, even when the runner runs as root (whom the
kernel's process rlimit never binds), nor use more memory across its processes than its cap (the
address-space rlimit binds each process alone): a fork bomb or a memory bomb is ended with a
refusal in the ledger, leaves nothing running, and the next command runs. Each runs twice: with the
command's cgroups, and where none can be made (a read-only cgroup file system; simulated by the probe
finding no parent) — then the runner's own pid namespace caps the processes of a root runner, and a
watch of the command's process tree ends it past its memory."""

import functools
import os
import time
from typing import Any

import pytest

from nexus.agent_runner.hypervisor import cgroups, sandbox as sandbox_mod
from nexus.domain.sessions import CommandRunChange, RefusedChange

from tests.agent_runner.hypervisor.test_contained import _marked_dead


@pytest.fixture(params=["cgroups", "no-cgroups"])
def caps_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "no-cgroups":
        monkeypatch.setattr(cgroups, "parent", lambda controller: None)
    return str(request.param)


def _bounded(mode: str) -> bool:
    """Something bounds a fork bomb here: a pids cgroup, a non-root uid (RLIMIT_NPROC), or a pid namespace."""
    if os.getuid() != 0:
        return True
    return sandbox_mod.pid_namespaces() if mode == "no-cgroups" else cgroups.parent("pids") is not None


async def _bomb(box: Any, script: str, marker: str) -> Any:
    (box.ws / "bomb.py").write_text(script)
    result = await box.hv.call("run_command", {"cmd": f"python3 bomb.py {marker}", "timeout_s": 60})
    assert _marked_dead(marker, within_s=10) == []  # nothing it started is left
    return result


def _assert_refused(box: Any, result: Any) -> None:
    assert not result.ok
    assert "refused (process-limit)" in result.error
    assert f"more than {sandbox_mod.Limits().processes} processes" in result.error
    assert isinstance(box.session.changes[-2], CommandRunChange)
    refusal = box.session.changes[-1]
    assert isinstance(refusal, RefusedChange) and refusal.reason == "process-limit"


async def test_more_processes_than_the_cap_are_refused(sandbox: Any, caps_mode: str) -> None:
    """Bounded (2,000 sleepers), so that without the cap it ends too: then they all start."""
    if not _bounded(caps_mode):
        pytest.skip("root with neither a pids cgroup nor a pid namespace of its own")
    marker = f"many-{os.getpid()}-{time.monotonic_ns()}"
    script = (  # a refused fork is waited out, as a build would: the cap, not the program, ends it
        "import os, time\n"
        "for _ in range(2000):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        time.sleep(30)\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "print('all started')\n"
    )
    result = await _bomb(sandbox, script, marker)
    _assert_refused(sandbox, result)
    after = await sandbox.hv.call("run_command", {"cmd": "echo still-here"})
    assert after.ok and "still-here" in after.output


async def test_a_fork_bomb_ends_with_a_refusal_and_the_run_goes_on(sandbox: Any, caps_mode: str) -> None:
    if not _bounded(caps_mode):
        pytest.skip("nothing bounds a fork bomb here, so none is started")
    with open("/proc/sys/kernel/pid_max") as fh:
        pid_max = fh.read()
    marker = f"bomb-{os.getpid()}-{time.monotonic_ns()}"
    script = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = await _bomb(sandbox, script, marker)
    _assert_refused(sandbox, result)
    after = await sandbox.hv.call("run_command", {"cmd": "echo still-here"})
    assert after.ok and "still-here" in after.output
    sandbox.assert_recorded()
    with open("/proc/sys/kernel/pid_max") as fh:
        assert fh.read() == pid_max  # the machine's own is untouched: only the command's namespace had one


async def test_memory_past_the_cap_across_processes_ends_the_command(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch, caps_mode: str
) -> None:
    """Four processes of 160 MiB each, every one well under the address-space rlimit; together past a
    cap of 256 MiB (without the cap, 640 MiB is used and the command ends by itself)."""
    monkeypatch.setattr(sandbox_mod, "Limits", functools.partial(sandbox_mod.Limits, memory=256 << 20))
    marker = f"hog-{os.getpid()}-{time.monotonic_ns()}"
    script = (
        "import os, time\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        break\n"
        "held = b'x' * (160 << 20)\n"
        "time.sleep(5)\n"
        "print('held')\n"
    )
    result = await _bomb(sandbox, script, marker)
    assert not result.ok
    assert "refused (memory-limit)" in result.error and "more than 256 MiB" in result.error, result
    refusal = sandbox.session.changes[-1]
    assert isinstance(refusal, RefusedChange) and refusal.reason == "memory-limit"
    after = await sandbox.hv.call("run_command", {"cmd": "echo still-here"})
    assert after.ok and "still-here" in after.output


MEMFD = (
    "import os, time\n"
    "fd = os.memfd_create('hold')\n"
    "for _ in range(400):\n"
    "    os.write(fd, b'x' * (1 << 20))\n"
    "time.sleep(5)\n"
    "print('held')\n"
)


async def test_memory_held_in_a_memfd_is_counted(sandbox: Any, monkeypatch: pytest.MonkeyPatch, caps_mode: str) -> None:
    """400 MiB written to a memfd and never mapped: resident in no process, so without a memory cgroup
    the watch of the tree counts the memfds its processes hold (it used to see nothing, the address-space
    rlimit neither)."""
    monkeypatch.setattr(sandbox_mod, "Limits", functools.partial(sandbox_mod.Limits, memory=256 << 20))
    marker = f"memfd-{os.getpid()}-{time.monotonic_ns()}"
    result = await _bomb(sandbox, MEMFD, marker)
    assert not result.ok and "refused (memory-limit)" in result.error, result

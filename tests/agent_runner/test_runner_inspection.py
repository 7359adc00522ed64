"""A command of the runner's own user reads nothing of the runner's process: not its environment (where a
cold runner's run credential and secrets arrive), not its memory (where every runner keeps them).

In the `none` sandbox mode a command runs as the runner's user, in its namespaces. The kernel lets a process
read `/proc/<pid>/environ` and `/proc/<pid>/mem` (and ptrace) of its own user's processes, unless the target
is not dumpable. Root with every capability is out of such a command's reach already (the command, stripped
of capabilities, may not inspect a process holding more); a runner without privilege is not. Here the runner
is root with every capability dropped, which the kernel judges like any other user's process (the machine's
Python lives in root's home, out of another user's reach). The probe reads every process it can."""

import ctypes
import json
import uuid

import pytest

from nexus.agent_runner.hypervisor.privileges import dropper
from tests.agent_runner.test_runner_support import config, final_status, js, read_events, start_runner  # noqa: F401 — pytest fixtures, used as parameters

pytestmark = pytest.mark.infra

# What a hostile command does: every process's environment, descriptors and readable memory, searched for the run's
# secret (given reversed: the probe's own text holds no copy) and the names the worker hands a runner.
PROBE = r"""
import json, os
needle = NEEDLE[::-1].encode()
me, readable, found = os.getpid(), [], []
for pid in sorted(int(p) for p in os.listdir('/proc') if p.isdigit()):
    if pid == me:
        continue
    try:
        with open(f'/proc/{pid}/environ', 'rb') as fh:
            env = fh.read()
    except OSError:
        pass
    else:
        readable.append(['environ', pid])
        if needle in env or b'NEXUS_NATS_CREDS=' in env or b'NEXUS_SECRET_' in env:
            found.append(['environ', pid])
    try:  # its descriptors (its bus connection, the worker's relay, its files) reopened through /proc
        fds = os.listdir(f'/proc/{pid}/fd')
    except OSError:
        fds = []
    for fd in fds:
        try:
            os.close(os.open(f'/proc/{pid}/fd/{fd}', os.O_RDONLY | os.O_NONBLOCK))
        except OSError:
            continue
        readable.append(['fd', pid])
        break
    try:
        maps = open(f'/proc/{pid}/maps').read().splitlines()
        mem = open(f'/proc/{pid}/mem', 'rb', buffering=0)
    except OSError:
        continue
    with mem:
        for line in maps:
            span, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in span.split('-'))
            if 'r' not in perms or hi - lo > 1 << 28:
                continue
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except OSError:
                continue
            readable.append(['mem', pid])
            if needle in data:
                found.append(['mem', pid])
                break
with open('/proc/self/environ', 'rb') as fh:
    own = len(fh.read()) > 0
json.dump({'own': own, 'readable': readable, 'found': found}, open('found.json', 'w'))
"""


def probe_steps(value: str) -> list[dict]:
    """A scripted agent's steps that write the probe, looking for `value` (kept reversed in the probe, so the
    probe's own text never holds it), and run it."""
    probe = f"NEEDLE = {value[::-1]!r}\n" + PROBE
    return [
        {"tool_calls": [{"name": "write_file", "args": {"path": "probe.py", "content": probe}}]},
        {"tool_calls": [{"name": "run_command", "args": {"cmd": "python3 probe.py"}}]},
        {"say": "done"},
    ]


def _capless() -> None:
    """In the runner's process before it executes: root without a capability, for good."""
    dropper(ctypes.CDLL(None, use_errno=True))()


async def test_a_command_of_the_runners_user_reads_nothing_of_the_runner(js, nats_url, tmp_path) -> None:
    value = f"sk-{uuid.uuid4().hex}"
    steps = probe_steps(value)
    cfg = config(
        json.dumps({"steps": steps}),
        secrets=["MODEL_KEY"],
        permissions={"commands": {"allow": ["python3 probe.py"], "default": "deny"}},
    )
    r = await start_runner(
        tmp_path,
        nats_url,
        cfg,
        secrets={"MODEL_KEY": value},
        env={"NEXUS_SANDBOX": "none"},
        preexec=_capless,
    )
    assert await r.exit_code() == 0, r.log()
    assert final_status(await read_events(js, cfg.run_id))["status"] == "succeeded"
    seen = json.loads((r.workspace / "found.json").read_text())
    assert seen["own"]  # the probe could read /proc: what it did not read was refused
    assert seen["found"] == [], seen
    runner = r.proc.pid
    assert not [kind for kind, pid in seen["readable"] if pid == runner], seen

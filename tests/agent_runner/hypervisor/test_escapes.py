"""An agent that tries to leave its sandbox from a command it is allowed to run (python3, any program):
read the runner's environment, credential or state, reach the network or the runner's sockets, use a
descriptor the runner holds, signal the runner, fill memory through /dev, or leave something running.
Each asserts the escape failed and the runner (this test process) is untouched and goes on."""

import asyncio
import os
import signal
import socket
import time
from typing import Any

import pytest

from nexus.domain.agents import CommandPolicy, Permissions
from nexus.domain.sessions import CommandRunChange

from tests.agent_runner.hypervisor.test_contained import _marked_dead


async def _py(box: Any, script: str, *args: str, timeout_s: float = 30) -> str:
    (box.ws / "probe.py").write_text(script)
    result = await box.hv.call("run_command", {"cmd": " ".join(["python3", "probe.py", *args]), "timeout_s": timeout_s})
    assert result.ok, result.error
    assert isinstance(box.session.changes[-1], CommandRunChange)
    return str(result.output)


def _bwrap(box: Any) -> None:
    if box.hv.sandbox != "bwrap":
        pytest.skip("these walls are bubblewrap's")


@pytest.fixture(params=["bwrap", "landlock"])
def confined(request: pytest.FixtureRequest, sandbox: Any) -> Any:
    """The sandbox made with each confinement that walls these in (Landlock: no /proc, no path outside,
    TCP and abstract sockets and signals scoped, by ABI)."""
    from nexus.agent_runner.hypervisor import sandbox as sandbox_mod

    mode = str(request.param)
    if sandbox_mod.detect(mode) != mode or (mode == "landlock" and sandbox_mod.landlock_abi() < 6):
        pytest.skip(f"{mode} (with scoped signals and sockets) is not available here")
    sandbox.make(sandbox_mode=mode)
    return sandbox


READ_EVERY_ENVIRON = """
import os
found = []
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            found.append(open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace'))
        except OSError as exc:
            found.append(f'{pid}: {exc}')
print('PIDS', [p for p in os.listdir('/proc') if p.isdigit()])
print('\\n'.join(f.replace('\\0', '\\n') for f in found))
"""


async def test_no_process_the_command_can_see_holds_the_runner_environment(confined: Any) -> None:
    with open("/proc/self/environ", "rb") as fh:  # what another process would read of the runner's
        own = fh.read().decode(errors="replace").replace("\0", "\n")
    assert len(own) > 20
    out = await _py(confined, READ_EVERY_ENVIRON)
    assert own not in out
    assert confined.RUNNER_SECRET not in out and "NEXUS_SECRET" not in out


async def test_the_runner_state_credential_and_git_directory_are_out_of_sight(confined: Any) -> None:
    sandbox = confined
    sandbox.hv.seal_state()
    (sandbox.root / "nats.creds").write_text("-----BEGIN NATS USER JWT-----\nsecret-jwt\n")
    targets = [str(sandbox.state_file), str(sandbox.root / "nats.creds"), str(sandbox.root / "gitdir" / "config")]
    (sandbox.ws / "targets.txt").write_text("\n".join(targets))  # named in a file: the policy reads no script
    script = (
        "for path in open('targets.txt').read().splitlines():\n"
        "    try:\n"
        "        print('READ', path, open(path).read()[:40])\n"
        "    except OSError as exc:\n"
        "        print('NO', path, type(exc).__name__)\n"
    )
    out = await _py(sandbox, script)
    assert "READ" not in out and out.count("NO ") == 3, out


async def test_a_descriptor_the_runner_holds_does_not_reach_the_command(sandbox: Any) -> None:
    secret_file = sandbox.root / "held.txt"
    secret_file.write_text("held-by-the-runner\n")
    fd = os.open(secret_file, os.O_RDONLY)
    os.set_inheritable(fd, True)  # even one a library left inheritable
    try:
        script = (
            "import os\n"
            "for fd in sorted(int(n) for n in os.listdir('/proc/self/fd')):\n"
            "    try:\n"
            "        print(fd, os.readlink(f'/proc/self/fd/{fd}'), os.pread(fd, 64, 0))\n"
            "    except OSError as exc:\n"
            "        print(fd, type(exc).__name__)\n"
        )
        out = await _py(sandbox, script)
    finally:
        os.close(fd)
    assert "held-by-the-runner" not in out and "held.txt" not in out


async def test_the_network_and_the_runner_sockets_are_out_of_reach(confined: Any) -> None:
    sandbox = confined
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    abstract = socket.socket(socket.AF_UNIX)
    name = f"\0nexus-test-{os.getpid()}-{time.monotonic_ns()}"
    abstract.bind(name)
    abstract.listen()
    abstract.setblocking(False)
    port = listener.getsockname()[1]
    script = (
        "import socket, sys\n"
        "for family, where in ((socket.AF_INET, ('127.0.0.1', int(sys.argv[1]))), (socket.AF_UNIX, '\\0' + sys.argv[2])):\n"
        "    s = socket.socket(family)\n"
        "    s.settimeout(3)\n"
        "    try:\n"
        "        s.connect(where); print('CONNECTED', family)\n"
        "    except OSError as exc:\n"
        "        print('NO', family, exc)\n"
    )
    try:
        out = await _py(sandbox, script, str(port), name[1:])
        assert "CONNECTED" not in out, out
        for sock in (listener, abstract):
            with pytest.raises(BlockingIOError):
                sock.accept()
    finally:
        listener.close()
        abstract.close()


@pytest.mark.parametrize("how", ["kill-everything", "kill-runner-pid", "kill-parent-group"])
async def test_signals_do_not_reach_the_runner(confined: Any, how: str) -> None:
    sandbox = confined
    script = {
        "kill-everything": "import os, signal\ntry:\n    os.kill(-1, signal.SIGWINCH)\nexcept OSError as e:\n    print(e)\n",
        "kill-runner-pid": "import os, signal, sys\ntry:\n    os.kill(int(sys.argv[1]), signal.SIGWINCH)\nexcept OSError as e:\n    print('NO', e)\n",
        "kill-parent-group": "import os, signal\nfor pid in (os.getppid(), 1):\n    try:\n        os.killpg(os.getpgid(pid), signal.SIGWINCH)\n    except OSError as e:\n        print('NO', e)\n",
    }[how]
    # SIGWINCH: harmless to every other process of the machine, should the wall ever fail.
    got: list[int] = []
    previous = signal.signal(signal.SIGWINCH, lambda signum, frame: got.append(signum))
    try:
        (sandbox.ws / "probe.py").write_text(script)
        await sandbox.hv.call("run_command", {"cmd": f"python3 probe.py {os.getpid()}", "timeout_s": 20})
        await asyncio.sleep(0.2)
    finally:
        signal.signal(signal.SIGWINCH, previous)
    assert got == []
    after = await sandbox.hv.call("run_command", {"cmd": "echo still-here"})
    assert after.ok and "still-here" in after.output


FILL_DEV = """
import os
for path in ('/dev/filler', '/dev/shm/filler'):
    try:
        with open(path, 'wb') as fh:
            for _ in range(1024):
                fh.write(b'x' * (1 << 20))
        print('WROTE', path, os.path.getsize(path))
    except OSError as exc:
        print('NO', path, exc.strerror, os.path.getsize(path) if os.path.exists(path) else 0)
"""


async def test_dev_holds_no_memory_hog(sandbox: Any) -> None:
    """bwrap's /dev is a tmpfs of half the machine's memory: writable by the command, a gigabyte there
    was memory no cap counted where no cgroup could be made. Now /dev is read-only and /dev/shm is the
    command's own directory on disk, held to the run's disk budget (test_hostile_temporary.py)."""
    sandbox.make(disk_budget=64 << 20)
    _bwrap(sandbox)
    (sandbox.ws / "probe.py").write_text(FILL_DEV)
    result = await sandbox.hv.call("run_command", {"cmd": "python3 probe.py", "timeout_s": 30})
    if not result.ok:  # the budget's watch saw /dev/shm grow past what was left, and ended the command
        assert result.error.startswith("refused (disk-budget)"), result.error
        return
    assert "WROTE" not in result.output, result.output
    assert "NO /dev/filler Read-only file system" in result.output
    assert "NO /dev/shm/filler File too large" in result.output, result.output  # the budget's file-size limit


DAEMON = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.closerange(0, 3)
        os.execvp('python3', ['python3', '-c', 'import time; time.sleep(120)', sys.argv[1]])
    os._exit(0)
print('daemonized')
"""


@pytest.mark.parametrize("mode", ["bwrap", "none"])
async def test_a_daemon_does_not_outlive_its_command_as_root(sandbox: Any, mode: str) -> None:
    """A double fork and setsid() leave the process group; under bwrap the pid namespace ends it, and
    without bwrap (root, no cgroups) the runner's own pid namespace does."""
    from nexus.agent_runner.hypervisor import cgroups, sandbox as sandbox_mod

    if sandbox_mod.detect(mode) != mode:
        pytest.skip(f"{mode} is not available here")
    if mode == "none" and not sandbox_mod.pid_namespaces():
        pytest.skip("a pid namespace of the runner's own needs root and Linux >= 6.14")
    hv = sandbox.make(sandbox_mode=mode, permissions=Permissions(commands=CommandPolicy(allow=["python3 *"])))
    marker = f"daemon-{mode}-{os.getpid()}-{time.monotonic_ns()}"
    orig = cgroups.parent
    cgroups.parent = lambda controller: None  # type: ignore[assignment] # the cgroups' kill after the command is not what holds it
    try:
        (sandbox.ws / "probe.py").write_text(DAEMON)
        result = await hv.call("run_command", {"cmd": f"python3 probe.py {marker}"})
    finally:
        cgroups.parent = orig  # type: ignore[assignment]
    assert result.ok and "daemonized" in result.output
    assert _marked_dead(marker) == []


LINK_OUT = """
import os
for source in ('/etc/passwd', '/etc/hostname', os.path.join(os.environ['HOME'], 'planted')):
    try:
        open(source, 'a').close() if source.endswith('planted') else None
        os.link(source, os.path.basename(source) + '.link')
        print('LINKED', source)
    except OSError as exc:
        print('NO', source, exc.strerror)
    try:
        os.symlink(source, os.path.basename(source) + '.sym')
    except OSError:
        pass
"""


async def test_links_a_command_makes_to_files_outside_carry_nothing_out(confined: Any, git_cmd: Any) -> None:
    """A hard link from the workspace to a file of the machine would be read by git and committed (then
    pushed); a symbolic one followed by the file tools. Hard links cannot cross bwrap's mounts nor
    Landlock's trees (no `refer` right outside the workspace), and symbolic ones are committed as links."""
    out = await _py(confined, LINK_OUT)
    assert "NO /etc/passwd" in out and "LINKED /etc" not in out, out
    for tool, args in [("read_file", {"path": "passwd.sym"}), ("write_file", {"path": "passwd.sym", "content": "x"})]:
        result = await confined.hv.call(tool, args)
        assert not result.ok
    committed = await confined.hv.call("git_commit", {"message": "links"})
    assert committed.ok, committed.error
    shown = git_cmd(confined.ws, "show", "--stat", "HEAD")
    assert "passwd.link" not in shown and "hostname.link" not in shown
    blobs = git_cmd(confined.ws, "ls-tree", "-r", "HEAD")
    for line in blobs.splitlines():
        if line.split("\t")[1].endswith(".sym"):
            assert line.startswith("120000")  # a link, never the file's content


RUNNER = """
import asyncio, sys
from pathlib import Path
from nexus.agent_runner.hypervisor import Hypervisor, cgroups
from nexus.domain.agents import CommandPolicy, Permissions
from nexus.domain.sessions import SessionState
cgroups.parent = lambda controller: None
ws, mode, marker = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
policy = Permissions(commands=CommandPolicy(allow=["python3 *"], default="allow"))
hv = Hypervisor(ws, policy, SessionState(session_id="s", project_path=str(ws)), sandbox_mode=mode)
cmd = "python3 -c 'import time; time.sleep(60)' " + marker + "-command"  # a marker this runner's argv lacks
asyncio.run(hv.call("run_command", {"cmd": cmd, "timeout_s": 60}))
"""


@pytest.mark.parametrize("mode", ["bwrap", "none"])
async def test_a_command_dies_with_a_killed_runner(tmp_path: Any, mode: str) -> None:
    """Where the runner's own pid namespace holds the command (no cgroups, root), that namespace's first
    process is the wrapper, not bwrap: killed with the runner too, or the command ran on, unwatched."""
    import subprocess
    import sys

    from nexus.agent_runner.hypervisor import sandbox as sandbox_mod
    from tests.agent_runner.hypervisor.test_contained import _with_marker

    if sandbox_mod.detect(mode) != mode or not sandbox_mod.pid_namespaces():
        pytest.skip("needs the pid namespace cap (root, Linux >= 6.14)")
    marker = f"orphan-{mode}-{os.getpid()}-{time.monotonic_ns()}"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path), mode, marker])
    marker += "-command"
    try:
        for _ in range(400):
            if _with_marker(marker):
                break
            await asyncio.sleep(0.05)
        assert _with_marker(marker), "the command never started"
    finally:
        runner.kill()
        runner.wait()
    assert _marked_dead(marker) == []


CAPABILITIES = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
class Header(ctypes.Structure):
    _fields_ = [('version', ctypes.c_uint32), ('pid', ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [('effective', ctypes.c_uint32), ('permitted', ctypes.c_uint32), ('inheritable', ctypes.c_uint32)]
data = (Data * 2)()
libc.capget(ctypes.byref(Header(0x20080522, 0)), ctypes.byref(data))
print('EFFECTIVE', data[0].effective | data[1].effective, 'PERMITTED', data[0].permitted | data[1].permitted)
print('BOUNDING', sum(libc.prctl(23, cap, 0, 0, 0) == 1 for cap in range(64)))
open('owned', 'w').close()
for name, attempt in (('chown', lambda: os.chown('owned', 4321, 4321)), ('setuid', lambda: os.setuid(4321)),
                      ('raw', lambda: __import__('socket').socket(2, 3, 1))):
    try:
        attempt()
        print('DID', name)
    except OSError as e:
        print('NO', name, e.errno)
"""


@pytest.mark.parametrize("mode", ["landlock", "none", "none-in-a-pid-namespace"])
async def test_a_root_runner_lends_its_commands_no_capability(
    sandbox: Any, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a user namespace the command runs in the runner's own: as root it kept every capability
    (routes, firewall, raw sockets, chown, setuid) that no Landlock rule judges. Where no pids cgroup can
    be made, the `none` mode's command starts under a pid namespace's wrapper that needs them itself."""
    from nexus.agent_runner.hypervisor import cgroups
    from nexus.agent_runner.hypervisor import sandbox as sandbox_mod

    if os.geteuid() != 0:
        pytest.skip("a runner that is not root has no capability to lend")
    if mode == "none-in-a-pid-namespace":
        if not sandbox_mod.pid_namespaces():
            pytest.skip("needs the pid namespace cap (root, Linux >= 6.14)")
        monkeypatch.setattr(cgroups, "parent", lambda controller: None)
        mode = "none"
    if sandbox_mod.detect(mode) != mode:
        pytest.skip(f"{mode} is not available here")
    sandbox.make(sandbox_mode=mode)
    out = await _py(sandbox, CAPABILITIES)
    assert "EFFECTIVE 0 PERMITTED 0" in out and "BOUNDING 0" in out, out
    assert "DID" not in out and out.count("NO ") == 3, out
    after = await sandbox.hv.call("run_command", {"cmd": "echo still-here"})
    assert after.ok and "still-here" in after.output

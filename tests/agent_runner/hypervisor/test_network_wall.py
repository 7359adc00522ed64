"""An agent granted `commands.network: true` reaches the internet's ports, not the machine's services:
real listeners this test opens on loopback (a service port such as NATS's or the database's, and an
arbitrary high port) and on the host's own non-loopback address stay out of reach of a hostile
command under bwrap and under Landlock, also through an MPTCP socket, an abstract unix socket or
io_uring; a port the agent declares still connects (no internet here: the rule is shown letting a
local listener on that port through)."""

import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nexus.domain.agents import CommandPolicy, Permissions

from tests.agent_runner.hypervisor.test_escapes import _py

SERVICE_PORTS = (4222, 27017, 5432, 8080, 8222, 6379)  # NATS, MongoDB/FerretDB, PostgreSQL, HTTP, ...

PROBE = """
import ctypes, json, socket, sys
out = {}
for name, family, kind, proto, where in json.loads(sys.argv[1]):
    try:
        s = socket.socket(getattr(socket, family), kind, proto)
        s.settimeout(3)
        s.connect(where if family == 'AF_UNIX' else tuple(where))
        out[name] = 'CONNECTED'
    except OSError as exc:
        out[name] = f'{type(exc).__name__}: {exc}'
try:  # TCP Fast Open: a connect hidden in sendto()
    high = next(target[4] for target in json.loads(sys.argv[1]) if target[0] == 'high')
    socket.socket().sendto(b'x', socket.MSG_FASTOPEN, tuple(high))
    out['fastopen'] = 'CONNECTED'
except OSError as exc:
    out['fastopen'] = f'{type(exc).__name__}: {exc}'
params = ctypes.create_string_buffer(120)
fd = ctypes.CDLL(None, use_errno=True).syscall(425, 8, params)  # io_uring_setup: its socket ops bypass seccomp
out['io_uring'] = 'CONNECTED' if fd >= 0 else f'errno {ctypes.get_errno()}'
print('RESULT', json.dumps(out))
"""


def _listen(host: str, port: int = 0, family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    sock.setblocking(False)
    return sock


def _service_listener() -> socket.socket:
    for port in SERVICE_PORTS:
        try:
            return _listen("127.0.0.1", port)
        except OSError:
            continue
    pytest.skip("every service-like port is taken on this machine")


def _host_address() -> str | None:
    """This machine's own non-loopback address (a datagram socket 'connected' sends nothing)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        address = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


@pytest.fixture
def listeners() -> Iterator[dict[str, socket.socket]]:
    opened = {"service": _service_listener(), "high": _listen("127.0.0.1"), "declared": _listen("127.0.0.1")}
    if address := _host_address():
        opened["host"] = _listen(address)
    if socket.has_ipv6:
        try:
            opened["ipv6"] = _listen("::1", family=socket.AF_INET6)
        except OSError:
            pass  # no IPv6 loopback here
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0nexus-netwall-{os.getpid()}-{time.monotonic_ns()}")
    abstract.listen()
    abstract.setblocking(False)
    opened["abstract"] = abstract
    yield opened
    for sock in opened.values():
        sock.close()


def _make(sandbox: Any, mode: str, network: bool, ports: list[int]) -> Any:
    from nexus.agent_runner.hypervisor import sandbox as sandbox_mod

    if sandbox_mod.detect(mode) != mode or sandbox_mod.landlock_abi() < 6:
        pytest.skip(f"{mode} with Landlock TCP rules and scopes is not available here")
    policy = CommandPolicy(allow=["python3 *"], default="allow", network=network, ports=ports)
    sandbox.make(permissions=Permissions(commands=policy), sandbox_mode=mode)
    return sandbox


def _targets(opened: dict[str, socket.socket]) -> list[list[Any]]:
    targets: list[list[Any]] = []
    for name, sock in opened.items():
        where = sock.getsockname()
        if name == "abstract":
            targets.append([name, "AF_UNIX", socket.SOCK_STREAM, 0, "\0" + where[1:].decode()])
            continue
        family = "AF_INET6" if sock.family == socket.AF_INET6 else "AF_INET"
        targets.append([name, family, socket.SOCK_STREAM, 0, list(where[:2])])
    high = list(opened["high"].getsockname())
    targets.append(["mptcp", "AF_INET", socket.SOCK_STREAM, socket.IPPROTO_MPTCP, high])  # a TCP that Landlock misses
    targets.append(["sctp", "AF_INET", socket.SOCK_SEQPACKET, 0, high])
    return targets


async def _probe(box: Any, opened: dict[str, socket.socket]) -> dict[str, str]:
    out = await _py(box, PROBE, "'" + json.dumps(_targets(opened)) + "'")
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    print("SEEN", line)
    return dict(json.loads(line.removeprefix("RESULT ")))


@pytest.mark.parametrize("mode", ["bwrap", "landlock"])
async def test_a_networked_command_reaches_declared_ports_but_no_service_of_the_machine(
    sandbox: Any, listeners: dict[str, socket.socket], mode: str
) -> None:
    declared = listeners["declared"].getsockname()[1]
    box = _make(sandbox, mode, network=True, ports=[declared])
    seen = await _probe(box, listeners)
    assert seen["declared"] == "CONNECTED", seen  # the rule lets an allowed port through, on any address
    walled = [name for name in seen if name != "declared"]
    assert all(seen[name] != "CONNECTED" for name in walled), seen
    assert "PermissionError" in seen["service"] and "PermissionError" in seen["high"], seen
    if "host" in listeners:
        assert "PermissionError" in seen["host"], seen
    assert seen["io_uring"] == "errno 1", seen
    for name, sock in listeners.items():
        if name != "declared":
            with pytest.raises(BlockingIOError):
                sock.accept()  # nothing arrived at the machine's services


async def test_a_port_another_agent_declared_is_not_open_to_this_one(
    sandbox: Any, listeners: dict[str, socket.socket]
) -> None:
    box = _make(sandbox, "bwrap", network=True, ports=[])
    seen = await _probe(box, listeners)
    assert "PermissionError" in seen["declared"], seen


async def test_an_unnetworked_landlock_command_has_no_mptcp_way_around_its_tcp_wall(
    sandbox: Any, listeners: dict[str, socket.socket]
) -> None:
    box = _make(sandbox, "landlock", network=False, ports=[])
    seen = await _probe(box, listeners)
    assert all(result != "CONNECTED" for result in seen.values()), seen
    with pytest.raises(BlockingIOError):
        listeners["high"].accept()

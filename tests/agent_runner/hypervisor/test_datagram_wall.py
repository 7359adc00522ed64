"""A networked command sends no datagram: seccomp cannot read the address a `connect()` or `sendto()`
names and Landlock judges only TCP, so a UDP (or ICMP) socket could reach every UDP service of the
machine, a metadata service on UDP, or carry anything anywhere. Real UDP listeners this test opens
on loopback, on the host's own address and on IPv6 loopback receive nothing from a hostile command
under bwrap and under Landlock, whatever socket type flags, protocol or upper argument bits it
tries, connected or not, or by taking the runner's own socket; names still resolve, over TCP (a
tiny DNS responder of the test, named by the sandbox's resolv.conf), and curl fetches by name from a
declared port; a command without network is as it was."""

import http.server
import json
import os
import random
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nexus.agent_runner.hypervisor import netwall

from tests.agent_runner.hypervisor.test_escapes import _py
from tests.agent_runner.hypervisor.test_network_wall import _host_address, _make

PROBE = """
import ctypes, json, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
targets, runner_fd = json.loads(sys.argv[1]), int(sys.argv[2])
out = {}

def send(sock, where):
    sock.settimeout(2)
    sock.sendto(b'nexus-datagram', tuple(where))
    return 'SENT'

def attempt(name, action):
    try:
        out[name] = action()
    except OSError as exc:
        out[name] = f'{type(exc).__name__}: errno {exc.errno}'

def connected(family, where):
    sock = socket.socket(getattr(socket, family), socket.SOCK_DGRAM)
    sock.connect(tuple(where))
    sock.send(b'nexus-datagram')
    return 'SENT'

def raw_socket(family, kind, proto, where):
    # the syscall itself, so every bit of every argument is the attacker's
    fd = libc.syscall(41, ctypes.c_long(family), ctypes.c_long(kind), ctypes.c_long(proto))
    if fd < 0:
        raise OSError(ctypes.get_errno(), 'socket')
    return send(socket.socket(fileno=fd), where)

for name, family, where in targets:
    attempt(f'{name}:connect', lambda: connected(family, where))
    attempt(f'{name}:sendto', lambda: send(socket.socket(getattr(socket, family), socket.SOCK_DGRAM), where))
loop = next(where for name, family, where in targets if name == 'loopback')
flags = {'plain': 0, 'nonblock': socket.SOCK_NONBLOCK, 'cloexec': socket.SOCK_CLOEXEC,
         'both': socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC}
protos = {'0': 0, 'udp': socket.IPPROTO_UDP, 'udplite': 136, 'icmp': socket.IPPROTO_ICMP}
for flag, bits in flags.items():
    for proto, number in protos.items():
        attempt(f'dgram/{flag}/{proto}', lambda: raw_socket(socket.AF_INET, socket.SOCK_DGRAM | bits, number, loop))
attempt('dgram/upper-type-bits', lambda: raw_socket(socket.AF_INET, (1 << 32) | socket.SOCK_DGRAM, 0, loop))
attempt('dgram/upper-family-bits', lambda: raw_socket((1 << 32) | socket.AF_INET, socket.SOCK_DGRAM, 0, loop))

def taken():  # the runner's own UDP socket, taken from it (Landlock mode: the runner is the parent)
    pidfd = libc.syscall(434, ctypes.c_int(os.getppid()), ctypes.c_uint(0))
    if pidfd < 0:
        raise OSError(ctypes.get_errno(), 'pidfd_open')
    fd = libc.syscall(438, ctypes.c_int(pidfd), ctypes.c_int(runner_fd), ctypes.c_uint(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), 'pidfd_getfd')
    return send(socket.socket(fileno=fd), loop)

attempt('runner-socket', taken)
print('RESULT', json.dumps(out))
"""


def _udp(host: str, family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


@pytest.fixture
def udp_listeners() -> Iterator[dict[str, socket.socket]]:
    opened = {"loopback": _udp("127.0.0.1")}
    if address := _host_address():
        opened["host"] = _udp(address)
    try:
        opened["ipv6"] = _udp("::1", socket.AF_INET6)
    except OSError:
        pass  # no IPv6 loopback here
    yield opened
    for sock in opened.values():
        sock.close()


async def _probe(box: Any, opened: dict[str, socket.socket], runner_fd: int) -> dict[str, str]:
    targets = [
        [name, "AF_INET6" if sock.family == socket.AF_INET6 else "AF_INET", list(sock.getsockname()[:2])]
        for name, sock in opened.items()
    ]
    out = await _py(box, PROBE, "'" + json.dumps(targets) + "'", str(runner_fd))
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    print("SEEN", line)
    return dict(json.loads(line.removeprefix("RESULT ")))


def _assert_walled(seen: dict[str, str], opened: dict[str, socket.socket]) -> None:
    assert all(result != "SENT" for result in seen.values()), seen
    refused = [name for name in seen if name != "runner-socket"]
    assert all(seen[name] == "PermissionError: errno 13" for name in refused), seen  # EACCES: the filter's
    for sock in opened.values():
        with pytest.raises(BlockingIOError):
            sock.recvfrom(64)  # nothing arrived


@pytest.mark.parametrize("mode", ["bwrap", "landlock"])
async def test_a_networked_command_sends_no_datagram_to_the_machine_or_anywhere(
    sandbox: Any, udp_listeners: dict[str, socket.socket], mode: str
) -> None:
    box = _make(sandbox, mode, network=True, ports=[])
    seen = await _probe(box, udp_listeners, udp_listeners["loopback"].fileno())
    _assert_walled(seen, udp_listeners)
    assert {"loopback:connect", "loopback:sendto", "dgram/both/udp", "dgram/plain/icmp"} <= set(seen), seen
    if "host" in udp_listeners:
        assert "host:connect" in seen and "host:sendto" in seen, seen


async def test_an_unnetworked_landlock_command_sends_no_datagram_either(
    sandbox: Any, udp_listeners: dict[str, socket.socket]
) -> None:
    """Landlock mode shares the machine's network even without the grant: UDP (and DNS over it) was
    its way out."""
    box = _make(sandbox, "landlock", network=False, ports=[])
    _assert_walled(await _probe(box, udp_listeners, udp_listeners["loopback"].fileno()), udp_listeners)


RESOLVE = """
import json, socket, subprocess, sys
name = sys.argv[1]
out = {'RES_OPTIONS': __import__('os').environ.get('RES_OPTIONS')}
for flags in (0, socket.AI_ADDRCONFIG):
    try:
        found = socket.getaddrinfo(name, 443, flags=flags, type=socket.SOCK_STREAM)
        out[f'getaddrinfo/{flags}'] = sorted({info[4][0] for info in found})
    except OSError as exc:
        out[f'getaddrinfo/{flags}'] = f'{type(exc).__name__}: {exc}'
done = subprocess.run(['getent', 'ahosts', name], capture_output=True, text=True)
out['getent'] = sorted({line.split()[0] for line in done.stdout.splitlines()}) or done.returncode
print('RESULT', json.dumps(out))
"""


async def _resolve(box: Any, name: str) -> dict[str, Any]:
    out = await _py(box, RESOLVE, name)
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    print("SEEN", line)
    return dict(json.loads(line.removeprefix("RESULT ")))


@pytest.mark.parametrize("mode", ["bwrap", "landlock"])
async def test_a_networked_command_still_resolves_the_machines_names(sandbox: Any, mode: str) -> None:
    box = _make(sandbox, mode, network=True, ports=[])
    seen = await _resolve(box, "localhost")
    assert seen["RES_OPTIONS"] == "use-vc", seen
    for how in ("getaddrinfo/0", f"getaddrinfo/{socket.AI_ADDRCONFIG}", "getent"):
        assert "127.0.0.1" in seen[how], seen


# --- a nameserver that answers over TCP only -------------------------------------------------------

NAME = "nexus-datagram-wall.test"
ANSWERS = ("192.0.2.41", "192.0.2.42")  # two: glibc then orders them, probing each with a UDP connect
WEB = f"web.{NAME}"  # a name for this machine's loopback, where the test serves HTTP on a declared port
ZONE = {NAME: ANSWERS, WEB: ("127.0.0.1",)}


def _answer(query: bytes) -> bytes:
    """A reply to one DNS query: the ZONE's A records, no data for a known name's other types, NXDOMAIN else."""
    ident, end = query[:2], 12
    while query[end]:
        end += query[end] + 1
    qname = b".".join(query[at + 1 : at + 1 + query[at]] for at in _labels(query, end)).decode().lower()
    qtype = struct.unpack("!H", query[end + 1 : end + 3])[0]
    question = query[12 : end + 5]
    if qname not in ZONE:
        return ident + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0) + question
    records = [socket.inet_aton(a) for a in ZONE[qname]] if qtype == 1 else []
    body = b"".join(struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + rdata for rdata in records)
    return ident + struct.pack("!HHHHH", 0x8180, 1, len(records), 0, 0) + question + body


def _labels(query: bytes, end: int) -> list[int]:
    at, starts = 12, []
    while at < end:
        starts.append(at)
        at += query[at] + 1
    return starts


class _Nameserver(socketserver.ThreadingTCPServer):
    daemon_threads = True
    asked: list[str]


class _Asked(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while head := self.request.recv(2, socket.MSG_WAITALL):
            query = self.request.recv(struct.unpack("!H", head)[0], socket.MSG_WAITALL)
            assert isinstance(self.server, _Nameserver)
            self.server.asked.append(query[2:4].hex())
            reply = _answer(query)
            self.request.sendall(struct.pack("!H", len(reply)) + reply)


@pytest.fixture
def nameserver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Nameserver]:
    """A TCP nameserver on port 53 of a loopback address of its own, and a resolv.conf naming it as the
    machine's (the one the sandbox copies)."""
    address = f"127.53.{random.randrange(1, 250)}.{os.getpid() % 250 + 1}"
    try:
        server = _Nameserver((address, 53), _Asked)
    except OSError as exc:
        pytest.skip(f"no nameserver on {address}:53 here ({exc})")
    server.asked = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"# the machine's\nnameserver {address}\noptions timeout:2 attempts:1\n")
    monkeypatch.setattr(netwall, "RESOLV_CONF", str(conf), raising=False)
    yield server
    server.shutdown()
    server.server_close()


async def test_a_networked_command_resolves_names_over_tcp_through_the_machines_nameserver(
    sandbox: Any, nameserver: _Nameserver
) -> None:
    box = _make(sandbox, "bwrap", network=True, ports=[])
    seen = await _resolve(box, NAME)
    for how in ("getaddrinfo/0", f"getaddrinfo/{socket.AI_ADDRCONFIG}", "getent"):
        assert seen[how] == sorted(ANSWERS), seen
    assert nameserver.asked, "the nameserver was asked over TCP"


async def test_curl_fetches_by_name_with_no_udp(sandbox: Any, nameserver: _Nameserver) -> None:
    """What fetching tools do: resolve over TCP, then connect to a port the agent declared."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        box = _make(sandbox, "bwrap", network=True, ports=[server.server_port])
        result = await box.hv.call("run_command", {"cmd": f"curl -sS --max-time 20 http://{WEB}:{server.server_port}/"})
    finally:
        server.shutdown()
        server.server_close()
    assert result.ok and "hello over tcp" in str(result.output), result


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello over tcp\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_an_unnetworked_bwrap_command_is_as_it_was(sandbox: Any, udp_listeners: dict[str, socket.socket]) -> None:
    """No network: a namespace of its own, where datagrams reach only its own loopback; the machine's
    resolv.conf as it is, no resolver option."""
    box = _make(sandbox, "bwrap", network=False, ports=[])
    script = (
        "import os, socket\n"
        "a, b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "a.bind(('127.0.0.1', 0)); b.sendto(b'own', a.getsockname())\n"
        "print('OWN', a.recv(8).decode(), os.environ.get('RES_OPTIONS'), 'use-vc' in open('/etc/resolv.conf').read())\n"
    )
    out = await _py(box, script)
    assert "OWN own None False" in out, out
    await _probe(box, udp_listeners, udp_listeners["loopback"].fileno())
    for sock in udp_listeners.values():
        with pytest.raises(BlockingIOError):
            sock.recvfrom(64)  # its own loopback is not the machine's

"""What `commands.network: true` reaches: the internet's usual ports over TCP, not the machine's services.

A networked command shares the runner's network namespace, where NATS, the database, PostgreSQL,
core-api and the cloud metadata address listen. Landlock (ABI >= 4) limits TCP connect by port on
every address, so the command may connect only to `INTERNET_PORTS` and the ports its agent
declares: 4222, 27017, 5432, 8080 ... are refused on loopback, the host's own addresses and every
other host alike (a DNS name that resolves to loopback changes nothing). Landlock judges only TCP,
and this kernel lets an MPTCP socket (a TCP variant) through it, so a seccomp filter lets a command
make only plain TCP, unix and netlink sockets (no UDP or ICMP datagrams, MPTCP, SCTP, raw, packet
or vsock) and no io_uring (whose socket opcodes seccomp cannot see). Seccomp cannot read the address
a datagram is sent to, so no datagram socket at all: names are resolved over TCP (port 53), told so
by `RESOLVER_ENV` and, where the sandbox has a file system of its own, `resolv_conf`."""

import ctypes
import os
import platform
import struct
import tempfile
from functools import cache

# ssh, DNS over TCP, https and git: what fetching code and packages needs. Not 80: the cloud metadata
# service (169.254.169.254) answers there; an agent that needs plain http declares it.
INTERNET_PORTS = (22, 53, 443, 9418)
# glibc's resolver (and Go's cgo one, which RES_OPTIONS selects) asks the nameserver over TCP: a UDP
# socket is refused. Go's own resolver reads only resolv.conf's options.
RESOLVER_ENV = {"RES_OPTIONS": "use-vc"}
RESOLV_CONF = "/etc/resolv.conf"

_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_RET_ALLOW, _RET_KILL_PROCESS, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_EPERM, _EACCES, _EAFNOSUPPORT = 1, 13, 97
_LD_ABS, _JEQ, _JGE, _AND, _RET = 0x20, 0x15, 0x35, 0x54, 0x06
_AF_UNIX, _AF_INET, _AF_NETLINK, _AF_INET6 = 1, 2, 16, 10
_SOCK_STREAM, _SOCK_TYPE_MASK = 1, 0xF
_IPPROTO_TCP = 6
# The native architecture's audit number and syscall numbers (socket, io_uring_setup).
_ARCHES = {"x86_64": (0xC000003E, 41, 425), "aarch64": (0xC00000B7, 198, 425)}
_X32_BIT = 0x40000000  # x86_64's x32 ABI: the same calls under other numbers


_Line = tuple[str] | tuple[int, int] | tuple[int, int, str | None, str | None]


class _Filter(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def _assemble(lines: list[_Line]) -> bytes:
    """Classic BPF from (label,) / (code, k) / (code, k, if_true, if_false) lines; jump targets are
    labels, or None for the next instruction."""
    where: dict[str, int] = {}
    program: list[tuple[int, int, str | None, str | None]] = []
    for line in lines:
        if len(line) == 1:
            where[line[0]] = len(program)
        elif len(line) == 2:
            program.append((line[0], line[1], None, None))
        else:
            program.append(line)
    out = b""
    for at, (code, k, if_true, if_false) in enumerate(program):
        jt, jf = (0 if t is None else where[t] - at - 1 for t in (if_true, if_false))
        out += struct.pack("=HBBI", code, jt, jf, k)
    return out


@cache
def socket_filter() -> bytes | None:
    """The seccomp program, or None on an architecture it does not know (then Landlock alone judges)."""
    native = _ARCHES.get(platform.machine())
    if native is None:
        return None
    arch, nr_socket, nr_io_uring = native
    x32 = [(_JGE, _X32_BIT, "eperm", None)] if platform.machine() == "x86_64" else []
    return _assemble(
        [
            (_LD_ABS, 4),  # seccomp_data.arch: a foreign ABI (32-bit) would number the calls otherwise
            (_JEQ, arch, None, "kill"),
            (_LD_ABS, 0),  # .nr
            *x32,
            (_JEQ, nr_io_uring, "eperm", None),
            (_JEQ, nr_socket, None, "allow"),
            (_LD_ABS, 16),  # args[0]: the family
            (_JEQ, _AF_INET, "inet", None),
            (_JEQ, _AF_INET6, "inet", None),
            (_JEQ, _AF_UNIX, "allow", None),
            (_JEQ, _AF_NETLINK, "allow", None),
            (_RET, _RET_ERRNO | _EAFNOSUPPORT),
            ("inet",),
            (_LD_ABS, 24),  # args[1]: the type, without SOCK_NONBLOCK / SOCK_CLOEXEC
            (_AND, _SOCK_TYPE_MASK),  # as the kernel masks it: any other flag bit is EINVAL there
            (_JEQ, _SOCK_STREAM, None, "eacces"),  # datagrams (UDP, ICMP), raw, seqpacket: no address to judge
            (_LD_ABS, 32),  # args[2]: a stream socket is plain TCP (0 or 6), never MPTCP (262) or SCTP
            (_JEQ, 0, "allow", None),
            (_JEQ, _IPPROTO_TCP, "allow", "eacces"),
            ("eacces",),
            (_RET, _RET_ERRNO | _EACCES),
            ("allow",),
            (_RET, _RET_ALLOW),
            ("kill",),
            (_RET, _RET_KILL_PROCESS),
            ("eperm",),
            (_RET, _RET_ERRNO | _EPERM),
        ]
    )


def install(program: bytes, libc: ctypes.CDLL) -> None:
    """Load the filter into the calling process (the child, after no_new_privs is set); inherited by
    everything it executes, and never removable."""
    prog = _Filter(len(program) // 8, program)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "seccomp filter refused")


def ports(declared: list[int]) -> tuple[int, ...]:
    """The TCP ports a networked command may connect to: the internet's usual ones and the agent's own."""
    return tuple(sorted({*INTERNET_PORTS, *declared}))


def resolv_conf() -> str:
    """A copy of the machine's resolv.conf (its nameservers kept) that asks them over TCP, for bwrap to
    bind over /etc/resolv.conf; the caller removes it after the command."""
    try:
        with open(RESOLV_CONF, encoding="utf-8", errors="replace") as fh:
            original = fh.read()
    except OSError:
        original = ""  # no file: the resolver's default, the local nameserver
    fd, path = tempfile.mkstemp(prefix="nexus-resolv-", suffix=".conf")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(original.rstrip("\n") + "\noptions use-vc\n")  # options lines add up; this one last
    os.chmod(path, 0o644)  # read by the command's own user in bwrap's user namespace
    return path

"""The OS wall around every agent command: the policy decides what may run, this decides what a
running command can reach.

`bwrap` (Debian's bubblewrap) when the kernel lets us create namespaces: the command sees the workspace
read-write (its git directory read-only), read-only system paths and the program's own installation, a
private /tmp and /dev/shm on disk (the run's disk budget holds them), its own PID namespace (only its
own processes in /proc; when the command exits, everything it started dies with the namespace,
`setsid()` or not), no network unless the policy grants it (then a Landlock ruleset and a seccomp
filter, netwall, limit it to TCP to the internet's ports, no UDP: not the machine's services), and
rlimits. Where namespaces are refused (a restricted Kubernetes pod), `landlock`: the same rlimits, a
fresh process group, and a Landlock ruleset (no privilege needed) that limits writes to the workspace
and a private temp directory, reads to the system paths, and (ABI >= 4) TCP to nothing, or to the
internet's ports when networking is granted, and no UDP either way; (ABI >= 6) no signals to processes
outside. Where neither works, `none`: rlimits and the process group only. The mode is detected once per
process and reported on every session."""

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache, partial

from nexus.agent_runner.hypervisor import cgroups, netwall, privileges
from nexus.agent_runner.hypervisor.paths import remove_tree

BWRAP = "/usr/bin/bwrap"
MODES = ("auto", "bwrap", "landlock", "none")
_SYSTEM_RO = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt")
_ETC_FILES = (
    "passwd",
    "group",
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "mime.types",
    "protocols",
    "services",
    "locale.alias",
    "magic",
    "magic.mime",
    "os-release",
    "debian_version",
    "python3",
    "python3.11",
    "perl",
)
FILE_BYTES = 1 << 30  # no file of a command grows past it (nor past what is left of the run's disk budget)


@dataclass(frozen=True)
class Limits:
    cpu_s: int = 600
    address_space: int = 8 << 30
    file_size: int = FILE_BYTES
    open_files: int = 1024
    processes: int = 512  # per command (a pids cgroup, where one can be made) and per user (the rlimit; never root)
    memory: int = 8 << 30  # all of the command's processes together (a memory cgroup, where one can be made)


@dataclass
class Spec:
    workspace: str
    network: bool = False
    programs: list[str] = field(default_factory=list)  # resolved executables the command runs
    limits: Limits = field(default_factory=Limits)
    gitdir: str | None = None  # read-only inside the sandbox when it lies in the workspace
    home: str | None = None  # a private, writable HOME outside the workspace (else one of the command's own)
    ports: tuple[int, ...] = netwall.INTERNET_PORTS  # the TCP ports a networked command may connect to


@dataclass(frozen=True)
class Prepared:
    argv: list[str]
    preexec: Callable[[], None]
    env: dict[str, str]
    cleanup: Callable[[], None]
    caps: cgroups.CommandCaps | None = None  # the command's own cgroups, when they could be made
    unbounded: dict[str, int] = field(default_factory=dict)  # the caps no cgroup holds: watched (proctree)


@cache
def detect(requested: str = "auto") -> str:
    """The confinement this process can give commands: "bwrap", "landlock" or "none"."""
    if requested not in MODES:
        raise ValueError(f"sandbox mode must be one of {', '.join(MODES)}")
    if requested in ("auto", "bwrap") and _bwrap_works():
        return "bwrap"
    if requested in ("auto", "bwrap", "landlock") and landlock_abi() > 0:
        return "landlock"
    return "none"


def describe(mode: str) -> str:
    return {
        "bwrap": "bwrap: namespaces (mount, pid, net, ipc, uts, user), read-only system, private /tmp, rlimits"
        + ("; granted network limited to the internet's TCP ports by Landlock, no UDP" if landlock_abi() >= 4 else ""),
        "landlock": f"landlock (ABI {landlock_abi()}): user namespaces refused; "
        "filesystem and TCP limited by Landlock, no UDP, rlimits, process group",
        "none": "none: neither user namespaces nor Landlock; "
        "only rlimits and a process group (the policy is the only wall)",
    }[mode]


def _bwrap_works() -> bool:
    if not os.access(BWRAP, os.X_OK):
        return False
    probe = [BWRAP, *_base_args(network=False), "--remount-ro", "/", "--", "/bin/true"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=10, env={"PATH": "/usr/bin:/bin"}).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _base_args(network: bool) -> list[str]:
    args = [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]
    if not network:
        args.append("--unshare-net")
    for path in _SYSTEM_RO:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in _ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    # bwrap's /dev holds a devpts of its own with no `max=`, and every instance draws on the machine's one
    # count (kernel.pty.max): a command opening ptys in a loop took the machine's. No command needs one
    # (its output is a pipe), and bwrap mounts devpts with no options to bound it: the multiplexer is
    # /dev/null, which the sandbox cannot open (EACCES), so no pty is made.
    args += ["--proc", "/proc", "--dev", "/dev", "--ro-bind", "/dev/null", "/dev/pts/ptmx"]
    return args


def _temporary_binds(private: str, home: str | None) -> list[str]:
    """The command's /tmp and /dev/shm: one directory of its own on disk (`private`, in the HOME room
    the run's disk budget walks; one entry more there while it runs), never a tmpfs. A tmpfs is memory:
    bwrap's /dev is one of half the machine's memory, and one sized by bwrap (`--size`, no inode cap)
    still held an inode per empty file and 64 KiB of extended attributes per inode past its size (3 GiB
    in a 256 MiB /tmp), uncounted where no memory cgroup is made. On disk, bytes count against the disk
    budget, inodes against its watch. Bound before the workspace and HOME, which may lie below /tmp on
    the machine."""
    args = ["--bind", private, "/dev/shm", "--remount-ro", "/dev", "--bind", private, "/tmp"]
    return args if home else [*args, "--dir", "/tmp/home"]


def _private_dir(spec: Spec) -> str:
    """A command's own temporary directory, in the hypervisor's HOME room when there is one: what the
    command writes there is walked and counted by the run's disk budget like the workspace (the machine's
    /tmp is no one's budget). Removed after the command (`_clear`)."""
    return tempfile.mkdtemp(prefix="nexus-cmd-", dir=_home_room(spec))


def _extra_roots(programs: Iterable[str], workspace: str) -> list[str]:
    """Read-only binds a program needs outside the system paths: its directory, and the
    installation prefix it belongs to (a virtualenv, or the interpreter a venv links into)."""
    roots: set[str] = set()
    for program in programs:
        if not program:
            continue
        for path in (program, os.path.realpath(program)):
            here = os.path.dirname(path)
            if _under(here, _SYSTEM_RO) or _under(here, (workspace,)):
                continue
            prefix = os.path.dirname(here)
            installed = os.path.basename(here) in ("bin", "sbin") and (
                os.path.exists(os.path.join(prefix, "pyvenv.cfg")) or os.path.isdir(os.path.join(prefix, "lib"))
            )
            roots.add(prefix if installed else here)
        interpreter = _shebang(program)
        if interpreter and interpreter != program:
            roots.update(_extra_roots([interpreter], workspace))
    return sorted(r for r in roots if r not in ("/", "") and not _under(r, (workspace,)))


def _shebang(program: str) -> str | None:
    try:
        with open(program, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    return os.fsdecode(words[0]) if words and words[0].startswith(b"/") else None


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def rlimited(limits: Limits) -> Callable[[], None]:
    """The pre-exec step that puts a helper of the hypervisor's own (not an agent's command) in `limits`."""
    return _rlimits(limits, None)


def _rlimits(limits: Limits, caps: cgroups.CommandCaps | None) -> Callable[[], None]:
    libc = _libc()  # loaded before the fork, never in the child

    def apply() -> None:
        if caps is not None:
            caps.enter()
        # Ended with the runner (bwrap is told so again; a pid namespace's wrapper and the other modes are not).
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        for kind, value in (
            (resource.RLIMIT_CPU, limits.cpu_s),
            (resource.RLIMIT_AS, limits.address_space),
            (resource.RLIMIT_FSIZE, limits.file_size),
            (resource.RLIMIT_NOFILE, limits.open_files),
            (resource.RLIMIT_NPROC, limits.processes),
            (resource.RLIMIT_CORE, 0),
        ):
            soft, hard = resource.getrlimit(kind)
            cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(kind, (cap, cap))

    return apply


def prepare(mode: str, argv: list[str], env: dict[str, str], spec: Spec) -> Prepared:
    """The argv, environment, pre-exec step and cleanup that run `argv` confined by `mode`, in cgroups
    of its own where they can be made (the process rlimit never binds root; the memory one binds each
    process, not their sum)."""
    caps = cgroups.CommandCaps({"pids": spec.limits.processes, "memory": spec.limits.memory})
    unbounded = {c: v for c, v in caps.limits.items() if c not in caps.controllers}
    wrapped = "pids" in unbounded and mode in ("bwrap", "none") and pid_namespaces()
    # The pid namespace's wrapper needs root's capabilities (unshare, its pid_max): in the `none` mode the
    # command gives them up after the wrapper (setpriv), not before it.
    prepared = _prepare(mode, argv, env, spec, _rlimits(spec.limits, caps if caps.active else None), wrapped)
    run_argv = prepared.argv
    if wrapped:
        run_argv = [*_pid_capped(spec.limits.processes), *run_argv]
    if not caps.active:
        return Prepared(run_argv, prepared.preexec, prepared.env, prepared.cleanup, None, unbounded)

    def cleanup() -> None:
        caps.close()
        prepared.cleanup()

    return Prepared(run_argv, prepared.preexec, prepared.env, cleanup, caps, unbounded)


# --- a process cap that binds root too, where no pids cgroup can be made -------------------------
# Since Linux 6.14 pid_max is a pid namespace's own, and a fork fails (EAGAIN) when any namespace
# above the process has no number left. The command starts as PID 1 of a namespace the runner made
# (root in the machine's user namespace: the command, root only in bwrap's own, can write only its
# own namespace's pid_max, never this one's), whose pid_max its process cap sets; when that PID 1 ends,
# the kernel ends everything left in the namespace.
UNSHARE = "/usr/bin/unshare"
_PID_MAX_SINCE = (6, 14)
_RESERVED_PIDS = 300  # after its first wrap the kernel hands out numbers from 300 up only
_SET_PID_MAX = 'printf %s "$1" > /proc/sys/kernel/pid_max && shift && exec "$@"'


def _pid_capped(processes: int) -> list[str]:
    pid_max = processes + _RESERVED_PIDS + 3  # the namespace's PID 1, bwrap's own, and the wrap's slack
    return [UNSHARE, "--pid", "--fork", "--kill-child", "--", "/bin/sh", "-c", _SET_PID_MAX, "sh", str(pid_max)]


def _kernel() -> tuple[int, ...]:
    release = os.uname().release.split("-", 1)[0]
    try:
        return tuple(int(part) for part in release.split(".")[:2])
    except ValueError:
        return (0,)


@cache
def pid_namespaces() -> bool:
    """The runner can cap a command's processes by a pid namespace of its own (root, Linux >= 6.14: on
    an older kernel pid_max is the machine's, so it is never written there)."""
    tools = (UNSHARE, privileges.SETPRIV[0])  # both util-linux's; setpriv gives the `none` mode's command its drop
    if os.geteuid() != 0 or _kernel() < _PID_MAX_SINCE or not all(os.access(t, os.X_OK) for t in tools):
        return False
    probe = [*_pid_capped(100), "/bin/cat", "/proc/sys/kernel/pid_max"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=10, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.strip() == str(100 + _RESERVED_PIDS + 3).encode()


def _prepare(
    mode: str, argv: list[str], env: dict[str, str], spec: Spec, rlimits: Callable[[], None], wrapped: bool = False
) -> Prepared:
    if mode == "bwrap":
        home = _home_room(spec)
        private = _private_dir(spec)
        args = [BWRAP, *_base_args(spec.network), *_temporary_binds(private, home)]
        for root in _extra_roots(spec.programs, spec.workspace):
            args += ["--ro-bind-try", root, root]
        if home:
            args += ["--bind", home, home]
        args += ["--bind", spec.workspace, spec.workspace]
        gitdir = spec.gitdir or os.path.join(spec.workspace, ".git")
        if (
            _under(os.path.realpath(gitdir), (spec.workspace,))
            and os.path.exists(gitdir)
            and not os.path.islink(gitdir)
        ):
            args += ["--ro-bind", gitdir, gitdir]
        resolver, forget = _resolver(spec)
        args += resolver
        args += ["--remount-ro", "/", "--chdir", spec.workspace, "--", *argv]  # the sandbox's own root: read-only too
        # The environment goes through bwrap's own (never --setenv: its argv is world-readable).
        inner_env = {**env, **_resolver_env(spec), "HOME": home or "/tmp/home", "TMPDIR": "/tmp"}

        def cleanup() -> None:
            forget()
            _clear(private)

        return Prepared(args, _walled(rlimits, spec), inner_env, cleanup)
    private = _private_dir(spec)
    inner_env = {**env, "HOME": private, "TMPDIR": private}
    if mode == "landlock":
        inner_env.update(_resolver_env(spec))
        roots = [*_SYSTEM_RO, *(f"/etc/{name}" for name in _ETC_FILES), *_extra_roots(spec.programs, spec.workspace)]
        rules = Rules(
            read=[r for r in roots if os.path.exists(r)],
            write=[spec.workspace, private, "/dev/null"],
            network=spec.network,
            ports=spec.ports,
        )

        drop = privileges.dropper(_libc())

        def preexec() -> None:
            rlimits()
            drop()  # before the ruleset: a root runner's capabilities are not the command's
            restrict(rules)

        return Prepared(list(argv), preexec, inner_env, partial(_clear, private))
    if wrapped:
        return Prepared([*privileges.SETPRIV, *argv], rlimits, inner_env, partial(_clear, private))
    drop = privileges.dropper(_libc())

    def unprivileged() -> None:
        rlimits()
        drop()

    return Prepared(list(argv), unprivileged, inner_env, partial(_clear, private))


def _net_walled(spec: Spec) -> bool:
    """The command shares the runner's network behind netwall: TCP by port, no datagram socket."""
    return spec.network and landlock_abi() >= 4


def _resolver_env(spec: Spec) -> dict[str, str]:
    return dict(netwall.RESOLVER_ENV) if _net_walled(spec) else {}


def _resolver(spec: Spec) -> tuple[list[str], Callable[[], None]]:
    """bwrap's binds for a walled network: the machine's nameservers, asked over TCP (it has no UDP)."""
    if not _net_walled(spec):
        return [], lambda: None
    resolv = netwall.resolv_conf()
    return ["--ro-bind", resolv, "/etc/resolv.conf"], partial(_unlink, resolv)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _walled(rlimits: Callable[[], None], spec: Spec) -> Callable[[], None]:
    """bwrap's pre-exec step: with the network granted, the runner's network namespace is shared, so
    bwrap and the command under it get a Landlock ruleset on TCP ports (and abstract sockets) and the
    socket filter only."""
    if not _net_walled(spec):
        return rlimits
    rules = Rules(read=[], write=[], network=True, ports=spec.ports, filesystem=False)

    def preexec() -> None:
        rlimits()
        restrict(rules)

    return preexec


def _home_room(spec: Spec) -> str | None:
    """The hypervisor's HOME room for commands, when it has one (a directory outside the workspace)."""
    home = spec.home
    return home if home and os.path.isdir(home) and not _under(home, (spec.workspace,)) else None


def _clear(private: str) -> None:
    """The command's private HOME/TMPDIR, gone after it: at any depth the command made it."""
    with contextlib.suppress(OSError):
        remove_tree(private)


# --- Landlock, through the raw syscalls (no privilege needed) ------------------------------------

_SYS_CREATE, _SYS_ADD, _SYS_RESTRICT = 444, 445, 446  # the same number on every architecture
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_PDEATHSIG = 1
_FS_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
_FS_ALL_V1 = (1 << 13) - 1
_NET_CONNECT = 1 << 1
_NET_ALL = (1 << 0) | _NET_CONNECT  # bind and connect TCP
_RULE_PATH, _RULE_PORT = 1, 2
_SCOPE_ALL = (1 << 0) | (1 << 1)  # abstract unix sockets and signals


class _PortAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("port", ctypes.c_uint64)]


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]


@dataclass(frozen=True)
class Rules:
    read: list[str]
    write: list[str]
    network: bool
    ports: tuple[int, ...] = ()  # with network: TCP connect only to these
    filesystem: bool = True  # False: leave paths to the namespaces (bwrap)


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@cache
def landlock_abi() -> int:
    try:
        abi: int = _libc().syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (OSError, AttributeError):
        return 0
    return max(abi, 0)


def _fs_mask(abi: int) -> int:
    mask = _FS_ALL_V1
    if abi >= 2:
        mask |= 1 << 13  # refer
    if abi >= 3:
        mask |= 1 << 14  # truncate
    if abi >= 5:
        mask |= 1 << 15  # ioctl on devices
    return mask


def _net_mask(abi: int, rules: Rules) -> int:
    if abi < 4:
        return 0
    return _NET_CONNECT if rules.network else _NET_ALL  # granted: listening stays free, connecting is by port


def restrict(rules: Rules) -> None:
    """Confine the calling process (and what it executes) to the rules; runs in the child."""
    abi = landlock_abi()
    libc = _libc()
    handled = _fs_mask(abi) if rules.filesystem else 0
    net = _net_mask(abi, rules)
    attr = _RulesetAttr(handled, net, _SCOPE_ALL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        if rules.filesystem:
            _add_paths(libc, ruleset, rules, handled)
        if net and rules.network:
            for port in rules.ports:
                _add_rule(libc, ruleset, _RULE_PORT, _PortAttr(_NET_CONNECT, port))
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
        if net and (program := netwall.socket_filter()):
            netwall.install(program, libc)  # what Landlock's TCP rules do not see (MPTCP, SCTP, io_uring)
        if libc.syscall(_SYS_RESTRICT, ruleset, ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


def _add_rule(libc: ctypes.CDLL, ruleset: int, kind: int, rule: ctypes.Structure) -> None:
    if libc.syscall(_SYS_ADD, ruleset, ctypes.c_int(kind), ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
        raise OSError(ctypes.get_errno(), "landlock_add_rule failed")


def _add_paths(libc: ctypes.CDLL, ruleset: int, rules: Rules, handled: int) -> None:
    for paths, access in ((rules.read, _FS_READ), (rules.write, handled)):
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                allowed = (
                    access if os.path.isdir(path) else access & ((1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15))
                )
                _add_rule(libc, ruleset, _RULE_PATH, _PathBeneath(allowed & handled, fd))
            finally:
                os.close(fd)

"""Reading a command line the way the system will run it, before the policy judges it.

A command is a chain of layers: wrappers that run another program from their arguments (`env`,
`nice`, `timeout`, `xargs`, `find -exec`, `busybox`, ...) and the program they finally run. Each
wrapper's options are parsed by its own rules (an option we do not know is refused, since it could
take a value and shift what we think the program is), so `env -u X rm ...` cannot hide `sh`. Then
each program's writes are read from its arguments (`cp`'s destination, `tar -x`'s members, `sed
-i`, `--output=...`): they must stay inside the workspace, never touch the git directory, and go
through the same `write:` approvals as `write_file`. Secret references are allowed only as leading
`NAME=${secret:X}` assignments: the value goes to the command's environment, never its argv.

Errors never quote user input with repr(): a secret with a backslash would escape the mask."""

import os
import re
import shlex
import shutil
import tarfile
import zipfile
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from nexus.agent_runner.hypervisor.errors import Refused
from nexus.agent_runner.hypervisor.secrets import SECRET_REF

MAX_DEPTH = 8
MAX_ARCHIVE_MEMBERS = 20_000

SHELLS = frozenset(
    {
        "sh",
        "bash",
        "rbash",
        "dash",
        "zsh",
        "ksh",
        "ksh93",
        "mksh",
        "pdksh",
        "csh",
        "tcsh",
        "fish",
        "ash",
        "yash",
        "posh",
        "pwsh",
        "elvish",
        "nu",
        "xonsh",
        "busybox-sh",
        "watch",
        "script",
        "tmux",
        "screen",
    }
)
# Programs that run code the agent can write (a script, a Makefile, a conftest.py): allowed only
# when an allow pattern names the program as its first word.
_INTERPRETER = re.compile(
    r"^(python|pypy|ipython|jupyter|perl|ruby|irb|node|nodejs|deno|bun|php|lua|luajit|tclsh|wish|expect|"
    r"awk|gawk|mawk|nawk|busybox-awk|R|Rscript|julia|java|jshell|groovy|scala|guile|racket|ocaml|ghci|"
    r"make|gmake|cmake|ninja|meson|scons|mvn|gradle|ant|rake|bundle|gem|composer|cargo|rustc|go|gcc|cc|"
    r"g\+\+|clang|clang\+\+|tcc|pip|pip3|pipx|uv|uvx|poetry|pdm|hatch|tox|nox|pytest|py\.test|npm|npx|yarn|"
    r"pnpm|dotnet|vi|vim|nvim|view|ex|ed|red|emacs|man|gdb|lldb|strace|ltrace|ssh|scp|sftp|rsync|socat|"
    r"nc|ncat|netcat|telnet|ftp|xdg-open|sensible-editor|editor|pager|sqlite3|psql|mysql|openssl|m4|dc|"
    r"tclsh|wish|pwsh|osascript|swipl|gforth|octave|maxima|bash-static)"
    r"([0-9][0-9.]*)?$"
)
# Never for an agent, whatever the policy says.
NEVER = frozenset(
    {
        "sudo",
        "su",
        "doas",
        "pkexec",
        "runuser",
        "setpriv",
        "capsh",
        "chroot",
        "unshare",
        "nsenter",
        "bwrap",
        "firejail",
        "systemd-run",
        "mount",
        "umount",
        "insmod",
        "modprobe",
        "rmmod",
        "mknod",
        "at",
        "batch",
        "crontab",
        "parallel",
        "apt",
        "apt-get",
        "dpkg",
        "fakeroot",
        "proot",
        "start-stop-daemon",
        "kill",
        "pkill",
        "killall",
        "patch",
        "gpg",
        "git-shell",
        "git-receive-pack",
        "git-upload-pack",
        "git-upload-archive",
        # They run another program and are not parsed here: what they run would go unseen.
        "setarch",
        "linux32",
        "linux64",
        "i386",
        "x86_64",
        "uname26",
        "prlimit",
        "cgexec",
        "numactl",
        "schedtool",
        "sg",
        "newgrp",
        "runcon",
        "unbuffer",
        "faketime",
        "torsocks",
        "proxychains",
        "proxychains4",
        "catchsegv",
        "nocache",
        "eatmydata",
        "chronic",
        "ifne",
        "pee",
        "vipe",
        "entr",
        "run-parts",
        "valgrind",
        "dbus-run-session",
        "ssh-agent",
        "xvfb-run",
        "docker",
        "podman",
        "kubectl",
        "ip",
        "chpst",
        "daemonize",
        "toybox",
        "sem",
        "xe",
        "rlwrap",
    }
)
# Options that make a program run another one, for any program (and their GNU abbreviations).
_EXEC_OPTIONS = (
    "--compress-program",
    "--use-compress-program",
    "--to-command",
    "--checkpoint-action",
    "--rsh-command",
    "--rmt-command",
    "--info-script",
    "--new-volume-script",
    "--unzip-command",
    "--execute",
    "--exec",
    "--filter",
    "--pager",
    "--editor",
    "--command",
    "--shell",
    "--preprocessor",
    "--interpreter",
    "--wrapper",
)
GIT_READ_ONLY = frozenset(
    {
        "status",
        "diff",
        "log",
        "show",
        "blame",
        "annotate",
        "ls-files",
        "ls-tree",
        "rev-parse",
        "rev-list",
        "grep",
        "shortlog",
        "describe",
        "cat-file",
        "diff-tree",
        "diff-files",
        "diff-index",
        "merge-base",
        "name-rev",
        "whatchanged",
        "count-objects",
        "check-ignore",
        "check-attr",
        "show-ref",
        "for-each-ref",
        "version",
    }
)
_GIT_GLOBAL_FLAGS = frozenset(
    {
        "--no-pager",
        "-P",
        "--no-optional-locks",
        "--literal-pathspecs",
        "--glob-pathspecs",
        "--noglob-pathspecs",
        "--icase-pathspecs",
        "--no-replace-objects",
        "--no-lazy-fetch",
    }
)
_GIT_REFUSED_OPTIONS = ("--ext-diff", "--textconv", "-O", "--open-files-in-pager", "--exec", "--upload-pack")
# Our own hardening, in front of the agent's git subcommand.
GIT_HARDENING = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-c", "diff.external=", "--no-pager")

# Long options whose value is a file the program writes, for any program.
_WRITE_OPTIONS = frozenset(
    {
        "--output",
        "--output-file",
        "--output-document",
        "--outfile",
        "--out-file",
        "--log-file",
        "--logfile",
        "--junitxml",
        "--junit-xml",
        "--basetemp",
        "--report-file",
        "--result-log",
        "--output-dir",
        "--output-directory",
        "--target-directory",
        "--dump-header",
        "--cookie-jar",
        "--trace",
        "--trace-ascii",
        "--libcurl",
        "--stderr",
        "--index-file",
        "--listed-incremental",
        "--append-output",
        "--directory-prefix",
    }
)
# Programs whose `-o X` writes X (elsewhere `-o` means other things: pytest's ini override, ...).
_SHORT_O_WRITES = frozenset({"sort", "curl", "time", "objcopy", "strip", "xxd", "msgfmt", "wget", "shuf", "base64"})
# Programs that write (create, change or remove) every path argument they are given.
_WRITE_ALL = frozenset(
    {
        "rm",
        "rmdir",
        "unlink",
        "shred",
        "touch",
        "mkdir",
        "mkfifo",
        "truncate",
        "tee",
        "dos2unix",
        "unix2dos",
        "gzip",
        "gunzip",
        "bzip2",
        "bunzip2",
        "xz",
        "unxz",
        "zstd",
        "unzstd",
        "lzma",
        "unlzma",
        "sponge",
    }
)
# What xargs may run: programs that write nothing whatever options they are given.
_XARGS_SAFE = frozenset(
    {
        "cat",
        "head",
        "tail",
        "wc",
        "grep",
        "egrep",
        "fgrep",
        "ls",
        "stat",
        "file",
        "md5sum",
        "sha1sum",
        "sha256sum",
        "sha512sum",
        "echo",
        "basename",
        "dirname",
        "du",
        "cmp",
        "nl",
        "strings",
        "true",
        "false",
    }
)
_FIRST_ARG_NOT_A_PATH = frozenset({"chmod", "chown", "chgrp"})
_DESTINATION_LAST = frozenset({"cp", "mv", "ln", "install", "link"})
# Writers that destroy what they are given: never the workspace root, which holds the git directory.
_DESTRUCTIVE = frozenset({"rm", "rmdir", "shred", "mv", "chmod", "chown", "chgrp", "truncate", "find"})

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_PLAIN_OK = re.compile(r"^(LANG|LC_[A-Z]+|TZ|NO_COLOR|FORCE_COLOR|COLUMNS|LINES|TERM|CI)$")
_ENV_NEVER = re.compile(
    r"^(LD_|DYLD_|GCONV_|GLIBC_|MALLOC_|PYTHON|PERL|RUBY|NODE_|NPM_CONFIG_|JAVA_|_JAVA|GIT_|SSH_|BASH_|LESS|"
    r"NEXUS|XDG_|CURL_|OPENSSL_|SSL_|LOCPATH$|NLSPATH$|HOSTALIASES$|RES_OPTIONS$|LOCALDOMAIN$|PATH$|HOME$|IFS$|"
    r"ENV$|SHELLOPTS$|PS4$|PROMPT_COMMAND$|PAGER$|EDITOR$|VISUAL$|MANPAGER$|BROWSER$|TMPDIR$|WGETRC$|CDPATH$|"
    r"TERMINFO|TZDIR$)",
    re.IGNORECASE,
)
_DEV_OK = frozenset(
    {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/stdout", "/dev/stderr", "/dev/stdin"}
)


@dataclass(frozen=True)
class WrapperSpec:
    flags: frozenset[str] = frozenset()
    values: frozenset[str] = frozenset()  # options that take a value
    positionals: int = 0  # arguments between the options and the command (timeout's duration)
    leaf_if: frozenset[str] = frozenset()  # options after which no command follows (ionice -p)


def _spec(flags: str = "", values: str = "", positionals: int = 0, leaf_if: str = "") -> WrapperSpec:
    return WrapperSpec(frozenset(flags.split()), frozenset(values.split()), positionals, frozenset(leaf_if.split()))


WRAPPERS: dict[str, WrapperSpec] = {
    "env": _spec(
        "-i - -0 -v --ignore-environment --null --debug --list-signal-handling",
        "-u --unset -C --chdir -S --split-string",
    ),
    "nice": _spec("", "-n --adjustment"),
    "nohup": _spec(),
    "timeout": _spec("--preserve-status --foreground -v --verbose -p", "-s --signal -k --kill-after", positionals=1),
    "stdbuf": _spec("", "-i -o -e --input --output --error"),
    "setsid": _spec("-c --ctty -f --fork -w --wait"),
    "ionice": _spec(
        "-t --ignore", "-c --class -n --classdata -p --pid -P --pgid -u --uid", leaf_if="-p --pid -P --pgid -u --uid"
    ),
    "chrt": _spec(
        "-a --all-tasks -b --batch -d --deadline -e --ext -f --fifo -i --idle -o --other -r --rr -R "
        "--reset-on-fork -v --verbose",
        "-T --sched-runtime -P --sched-period -D --sched-deadline",
        positionals=1,
        leaf_if="-m --max -p --pid",
    ),
    "taskset": _spec("-a --all-tasks -c --cpu-list", "", positionals=1, leaf_if="-p --pid"),
    "flock": _spec(
        "-s --shared -x --exclusive -e -u --unlock -n --nonblock --nb -o --close -F --no-fork --verbose",
        "-w --timeout --wait -E --conflict-exit-code",
        positionals=1,
    ),
    "command": _spec("-p", "", leaf_if="-v -V"),
    "exec": _spec("-c -l", ""),
    "time": _spec("-a --append -p --portability -v --verbose -q --quiet", "-o --output -f --format"),
    "xargs": _spec(
        "-0 --null -p --interactive -r --no-run-if-empty -t --verbose -x --exit -o --open-tty",
        "-a --arg-file -E -I -L -n --max-args -s --max-chars -P --max-procs -d --delimiter --process-slot-var",
    ),
}
_REFUSED_WRAPPER_OPTIONS = {
    "flock": {"-c", "--command"},
    "exec": {"-a"},
    "xargs": {"-e", "--eof", "-i", "--replace", "-l"},
}


@dataclass(frozen=True)
class Layer:
    argv: tuple[str, ...]
    name: str  # basename as written
    real: str  # basename of the executable it resolves to
    kind: str  # "program" | "wrapper" | "shell" | "interpreter" | "workspace"
    via: str = ""  # "" | "find" | "xargs": its arguments come from elsewhere

    @property
    def line(self) -> str:
        return " ".join(self.argv)


@dataclass
class Analysis:
    argv: list[str]  # what runs (template tokens; our hardening inserted)
    env: dict[str, str] = field(default_factory=dict)  # NAME -> template value (holds ${secret:X})
    layers: list[Layer] = field(default_factory=list)
    writes: list[tuple[str, bool]] = field(default_factory=list)  # (path relative to the workspace, is a directory)
    programs: list[str] = field(default_factory=list)  # resolved executables, for the sandbox's binds


class Context:
    def __init__(self, root: str, path: str, gitdir: str | None = None) -> None:
        self.root = os.path.realpath(root)
        self.path = path
        self.gitdir = os.path.realpath(gitdir) if gitdir else os.path.join(self.root, ".git")

    def inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root + os.sep)

    def in_git(self, real: str) -> bool:
        return real == self.gitdir or real.startswith(self.gitdir + os.sep)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def split(cmd: str) -> list[str]:
    try:
        argv = shlex.split(cmd)
    except ValueError as exc:
        raise Refused("invalid-command", f"cannot parse the command line: {exc}") from None
    if not argv:
        raise Refused("invalid-command", "the command is empty")
    if any("\x00" in token for token in argv):
        raise Refused("invalid-command", "the command contains a NUL byte")
    return argv


def analyze(template: list[str], ctx: Context) -> Analysis:
    """The structure of a command line: refuses what no policy may allow, returns the rest."""
    env, start = _leading_assignments(template)
    if start == len(template):
        raise Refused("invalid-command", "only variable assignments, no program")
    for index, token in enumerate(template[start:], start):
        if SECRET_REF.search(token):
            raise Refused(
                "secret-in-argv",
                f"argument {index} holds a secret reference; secrets reach a command only by environment: "
                "write NAME=${secret:X} before the program and let it read $NAME",
            )
    out = Analysis(argv=[], env=env)
    out.argv = _resolve(template[start:], ctx, out, depth=0, via="")
    return out


def _leading_assignments(template: list[str]) -> tuple[dict[str, str], int]:
    env: dict[str, str] = {}
    index = 0
    for index, token in enumerate(template):  # the index is the result
        name, eq, value = token.partition("=")
        if not eq or not _ENV_NAME.match(name):
            return env, index
        _check_assignment(name, value)
        env[name] = value
    return env, len(template)


def _check_assignment(name: str, value: str) -> None:
    if _ENV_NEVER.match(name):
        raise Refused("env-not-allowed", f"the variable {_short(name, 60)} changes how programs run; it cannot be set")
    refs = SECRET_REF.findall(value)
    if refs and SECRET_REF.fullmatch(value):
        return
    if refs:
        raise Refused("env-not-allowed", f"{_short(name, 60)} must be exactly one secret reference, nothing around it")
    if not _ENV_PLAIN_OK.match(name):
        raise Refused(
            "env-not-allowed", f"{_short(name, 60)}: only secret references and locale/colour variables may be set"
        )


def _resolve(argv: list[str], ctx: Context, out: Analysis, *, depth: int, via: str) -> list[str]:
    """Classify argv[0], recurse through wrappers; returns argv with our hardening inserted."""
    if depth > MAX_DEPTH:
        raise Refused("invalid-command", "too many nested wrappers")
    if os.path.basename(argv[0]) in NEVER:
        reason = "use-apply-patch" if os.path.basename(argv[0]) == "patch" else "not-permitted"
        raise Refused(reason, f"{os.path.basename(argv[0])[:120]} is never run for an agent")
    layer, path = _classify(argv, ctx, via)
    out.layers.append(layer)
    out.programs.append(path)
    if layer.real in NEVER or layer.name in NEVER:
        reason = "use-apply-patch" if "patch" in (layer.real, layer.name) else "not-permitted"
        raise Refused(reason, f"{layer.name} is never run for an agent")
    if layer.name.startswith("git-") or layer.real.startswith("git-"):
        raise Refused("not-permitted", f"{layer.name} is git's plumbing; agents use git through the git tools")
    name = layer.real if layer.real in WRAPPERS or layer.real in ("busybox", "find") else layer.name
    if name in WRAPPERS and layer.kind == "program":
        return _wrapper(name, argv, ctx, out, depth)
    if name == "busybox" and len(argv) > 1:
        if argv[1].startswith("-"):
            raise Refused("not-permitted", "busybox options are not allowed; name the applet")
        return [argv[0], *_resolve(argv[1:], ctx, out, depth=depth + 1, via=via)]
    if name == "find":
        return _find(argv, ctx, out, depth)
    if layer.kind in ("shell", "interpreter", "workspace"):
        _paths(argv[1:], ctx, layer.real)
        return list(argv)
    return _program(layer, argv, ctx, out)


def _classify(argv: list[str], ctx: Context, via: str) -> tuple[Layer, str]:
    program = argv[0]
    name = os.path.basename(program)
    if not name:
        raise Refused("command-not-found", "the program name is empty")
    if "/" in program:
        full = program if program.startswith("/") else os.path.join(ctx.root, program)
        real = os.path.realpath(full)
        if ctx.inside(real):
            if ctx.in_git(real):
                raise Refused("git-internals", "programs inside the git directory never run")
            if not os.path.isfile(real):
                raise Refused("command-not-found", f"{_short(program)} is not a file in the workspace")
            return Layer(tuple(argv), name, os.path.basename(real), "workspace", via), real
        if os.path.dirname(real) not in _path_dirs(ctx.path) and os.path.dirname(full) not in _path_dirs(ctx.path):
            raise Refused("path-outside-workspace", f"{_short(program)} is neither on PATH nor in the workspace")
        found = full if os.path.isfile(real) and os.access(real, os.X_OK) else None
    else:
        found = shutil.which(program, path=ctx.path)
    if not found:
        raise Refused("command-not-found", f"the program {_short(program)} was not found on PATH")
    real_path = os.path.realpath(found)
    if ctx.inside(real_path):
        raise Refused("path-outside-workspace", f"{_short(program)} resolves into the workspace; name it by its path")
    real = os.path.basename(real_path)
    names = {name, real}
    if names & SHELLS or any(
        n.endswith("sh") and n[:-2] in ("", "r", "ba", "da", "z", "k", "mk", "c", "tc", "a") for n in names
    ):
        kind = "shell"
    elif any(_INTERPRETER.match(n) for n in names):
        kind = "interpreter"
    else:
        kind = "program"
    return Layer(tuple(argv), name, real, kind, via), found


def _path_dirs(path: str) -> set[str]:
    return {os.path.realpath(entry) for entry in path.split(os.pathsep) if entry} | {
        entry for entry in path.split(os.pathsep) if entry
    }


def _options(name: str, spec: WrapperSpec, args: list[str]) -> tuple[int, list[tuple[str, str | None]]]:
    """(index of the first non-option, the options seen with their values); unknown options refuse."""
    seen: list[tuple[str, str | None]] = []
    refused = _REFUSED_WRAPPER_OPTIONS.get(name, set())
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            return index + 1, seen
        if name == "nice" and re.fullmatch(r"-\d+", arg):
            seen.append(("-n", arg[1:]))
            index += 1
            continue
        if arg == "-" and "-" in spec.flags:
            seen.append(("-", None))
            index += 1
            continue
        if not arg.startswith("-") or arg == "-":
            return index, seen
        if arg.startswith("--"):
            option, eq, value = arg.partition("=")
            if option in refused:
                raise Refused("not-permitted", f"{name} {option} runs a shell")
            if option in spec.values:
                if not eq:
                    value = _value_after(args, index, name, option)
                    index += 1
                seen.append((option, value))
            elif option in spec.flags and not eq:
                seen.append((option, None))
            else:
                raise Refused(
                    "unknown-option", f"{name} {_short(option, 40)} is not an option this wrapper is known to take"
                )
            index += 1
            continue
        position = 1
        while position < len(arg):
            option = "-" + arg[position]
            if option in refused:
                raise Refused("not-permitted", f"{name} {option} is not allowed")
            if option in spec.values:
                value = arg[position + 1 :]
                if not value:
                    value = _value_after(args, index, name, option)
                    index += 1
                seen.append((option, value))
                break
            if option not in spec.flags:
                raise Refused("unknown-option", f"{name} {option} is not an option this wrapper is known to take")
            seen.append((option, None))
            position += 1
        index += 1
    return index, seen


def _value_after(args: list[str], index: int, name: str, option: str) -> str:
    if index + 1 >= len(args):
        raise Refused("invalid-command", f"{name} {option} needs a value")
    return args[index + 1]


def _wrapper(name: str, argv: list[str], ctx: Context, out: Analysis, depth: int) -> list[str]:
    spec = WRAPPERS[name]
    args = argv[1:]
    start, seen = _options(name, spec, args)
    for option, value in seen:
        if option in ("-S", "--split-string"):  # env -S: its string is more arguments
            if value is None or re.search(r"[\\$#]", value):
                raise Refused("not-permitted", "env -S with escapes, variables or comments is not allowed")
            head = _flatten([(o, v) for o, v in seen if o not in ("-S", "--split-string")])
            return [argv[0], *_env_rest(split(value) + args[start:], ctx, out, depth, head=head)]
        if value is not None:
            _paths([value], ctx, name)
        if name in ("time",) and option in ("-o", "--output") and value is not None:
            _write(value, ctx, out, name)
    if {option for option, _ in seen} & spec.leaf_if:
        _paths(args[start:], ctx, name)
        return list(argv)
    if name == "env":
        return [argv[0], *args[:start], *_env_rest(args[start:], ctx, out, depth, head=None)]
    if len(args) - start < spec.positionals:
        return list(argv)  # no command: the wrapper on its own (`nice` prints the niceness)
    positionals = args[start : start + spec.positionals]
    _paths(positionals, ctx, name)
    if name == "flock" and positionals:
        _write(positionals[0], ctx, out, name)
    if name == "xargs":
        _xargs_input(dict(seen), ctx)
    inner = args[start + spec.positionals :]
    if not inner:
        return list(argv)  # the wrapper on its own (xargs runs echo)
    return [
        argv[0],
        *args[: start + spec.positionals],
        *_resolve(inner, ctx, out, depth=depth + 1, via="xargs" if name == "xargs" else ""),
    ]


def _xargs_input(options: dict[str, str | None], ctx: Context) -> None:
    """The arguments xargs will add come from its -a file (stdin is /dev/null): read them now and
    hold them to the same rules as the command line's (no options, no path out or into git)."""
    source = options.get("-a") or options.get("--arg-file")
    if not source:
        return
    path = os.path.realpath(os.path.join(ctx.root, source))
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 20)
    except OSError as exc:
        raise Refused("not-found", f"xargs -a: cannot read the argument file ({exc.strerror})") from None
    text = data.decode(errors="replace")
    delimiter = options.get("-d") or options.get("--delimiter")
    if "-0" in options or "--null" in options:
        items = text.split("\0")
    elif delimiter:
        items = text.split(delimiter.encode().decode("unicode_escape")[:1] or "\n")
    elif "-I" in options or "-L" in options:
        items = text.splitlines()
    else:
        try:
            items = shlex.split(text)
        except ValueError:
            raise Refused("invalid-command", "xargs -a: the argument file does not split into arguments") from None
    for item in (i.strip() for i in items if i.strip()):
        if item.startswith("-"):
            raise Refused(
                "not-permitted", "xargs -a: the argument file holds an option; options belong on the command line"
            )
        _paths([item], ctx, "xargs")


def _flatten(seen: list[tuple[str, str | None]]) -> list[str]:
    flat: list[str] = []
    for option, value in seen:
        flat.append(option)
        if value is not None:
            flat.append(value)
    return flat


def _env_rest(rest: list[str], ctx: Context, out: Analysis, depth: int, head: list[str] | None) -> list[str]:
    """env's NAME=VALUE arguments, then the command it runs (if any)."""
    index = 0
    while index < len(rest) and "=" in rest[index] and _ENV_NAME.match(rest[index].split("=", 1)[0]):
        index += 1
    inner = rest[index:]
    resolved = _resolve(inner, ctx, out, depth=depth + 1, via="") if inner else []
    for token in rest[:index]:
        name, _, value = token.partition("=")
        _check_assignment(name, value)
    return [*(head or []), *rest[:index], *resolved]


def _find(argv: list[str], ctx: Context, out: Analysis, depth: int) -> list[str]:
    args = argv[1:]
    index = 0
    while (
        index < len(args)
        and args[index] in ("-H", "-P", "-D", "-O")
        or (index < len(args) and re.fullmatch(r"-O\d", args[index]))
    ):
        if args[index] == "-D":
            index += 1
        index += 1
    if any(token in ("-L", "-follow") for token in args):
        raise Refused("not-permitted", "find -L/-follow follows symbolic links out of the workspace")
    roots = []
    while index < len(args) and not args[index].startswith("-") and args[index] not in ("(", "!", ","):
        roots.append(args[index])
        index += 1
    _paths(roots, ctx, "find")
    result = [argv[0], *args[:index]]
    while index < len(args):
        token = args[index]
        if token in ("-exec", "-execdir", "-ok", "-okdir"):
            end = index + 1
            while end < len(args) and args[end] not in (";", "+"):
                end += 1
            if end >= len(args) or end == index + 1:
                raise Refused("invalid-command", f"find {token} without a command ending in ; or +")
            inner = _resolve(args[index + 1 : end], ctx, out, depth=depth + 1, via="find")
            if (
                out.layers[-1].real in _WRITE_ALL | _DESTINATION_LAST | _FIRST_ARG_NOT_A_PATH
                or out.layers[-1].name == "sed"
            ):
                raise Refused(
                    "indirect-write", f"find {token} {out.layers[-1].name}: what it writes is known only at run time"
                )
            result += [token, *inner, args[end]]
            index = end + 1
            continue
        if token == "-delete":
            for root in roots or ["."]:
                _write(root, ctx, out, "find", destructive=True)
        elif token in ("-fprint", "-fprint0", "-fprintf", "-fls"):
            if index + 1 >= len(args):
                raise Refused("invalid-command", f"find {token} needs a file")
            _write(args[index + 1], ctx, out, "find")
        result.append(token)
        index += 1
    _paths(args, ctx, "find")
    return result


def _program(layer: Layer, argv: list[str], ctx: Context, out: Analysis) -> list[str]:
    name = layer.real if layer.real in _KNOWN else layer.name
    args = list(argv[1:])
    for arg in args:
        option = arg.partition("=")[0]
        if option.startswith("--") and len(option) >= 6 and any(known.startswith(option) for known in _EXEC_OPTIONS):
            raise Refused("not-permitted", f"{layer.name} {_short(option, 40)} runs another program")
    _paths(args, ctx, name)
    writes: list[str] = []
    for index, arg in enumerate(args):
        option, eq, value = arg.partition("=")
        if option in _WRITE_OPTIONS:
            target = value if eq else (args[index + 1] if index + 1 < len(args) else "")
            if target:
                writes.append(target)
        elif name in _SHORT_O_WRITES and arg.startswith("-o") and not arg.startswith("--"):
            target = arg[2:] or (args[index + 1] if index + 1 < len(args) else "")
            if target:
                writes.append(target)
    handler = _HANDLERS.get(name)
    if layer.via == "xargs" and name not in _XARGS_SAFE:  # its arguments come from a file: options too
        raise Refused("indirect-write", f"{layer.name} under xargs: its arguments, options included, come from a file")
    if layer.via and (handler is not None and name != "git" or writes):
        raise Refused("indirect-write", f"{layer.name} under {layer.via}: what it writes is known only at run time")
    if handler is not None:
        argv = handler(list(argv), ctx, out) or argv
    for target in writes:
        _write(target, ctx, out, name)
    return list(argv)


def _positionals(args: list[str], values: frozenset[str] = frozenset()) -> list[str]:
    found, skip, only = [], False, False
    for arg in args:
        if skip:
            skip = False
        elif only or not arg.startswith("-") or arg == "-":
            found.append(arg)
        elif arg == "--":
            only = True
        elif arg in values:
            skip = True
    return found


_COMPRESSORS = frozenset({"gzip", "gunzip", "bzip2", "bunzip2", "xz", "unxz", "zstd", "unzstd", "lzma", "unlzma"})


def _flag(arg: str, short: str, long: str) -> bool:
    """`arg` sets the short flag (alone or in a cluster like -dc) or is the long one."""
    return arg == long or (arg.startswith("-") and not arg.startswith("--") and short in arg[1:])


def _writes_all(argv: list[str], ctx: Context, out: Analysis) -> None:
    name = os.path.basename(argv[0])
    args = argv[1:]
    if name in _COMPRESSORS and any(
        _flag(a, "c", "--stdout") or _flag(a, "t", "--test") or _flag(a, "l", "--list") for a in args
    ):
        return  # to stdout, a test or a listing: the files stay as they are
    values = frozenset(
        {"-s", "--size", "-r", "--reference", "-m", "--mode", "-n", "--iterations", "--suffix", "-S", "-d", "-t"}
    )
    for target in _positionals(args, values):
        _write(target, ctx, out, name, destructive=name in _DESTRUCTIVE)


def _writes_after_first(argv: list[str], ctx: Context, out: Analysis) -> None:
    name = os.path.basename(argv[0])
    targets = _positionals(argv[1:], frozenset({"--reference", "--from"}))
    for target in targets[1:]:
        _write(target, ctx, out, name, destructive=True)


def _destination(argv: list[str], ctx: Context, out: Analysis) -> None:
    name = os.path.basename(argv[0])
    args = argv[1:]
    for index, arg in enumerate(args):
        if arg.startswith("-S") or arg.startswith("--suffix"):
            suffix = (
                arg.partition("=")[2] if "=" in arg else (arg[2:] or (args[index + 1] if index + 1 < len(args) else ""))
            )
            if "/" in suffix or suffix.startswith("."):
                raise Refused("not-permitted", f"{name}: a backup suffix may not hold a path or start with a dot")
        if name == "cp" and arg in ("-L", "--dereference", "-H"):
            raise Refused("not-permitted", "cp -L/-H follows symbolic links out of the workspace")
    targets = _positionals(
        args,
        frozenset({"-t", "--target-directory", "-S", "--suffix", "-m", "--mode", "-o", "--owner", "-g", "--group"}),
    )
    directory = next(
        (
            a.partition("=")[2] or (args[i + 1] if i + 1 < len(args) else "")
            for i, a in enumerate(args)
            if a == "-t" or a.startswith("--target-directory")
        ),
        None,
    )
    if directory is not None:
        _write(directory, ctx, out, name, is_dir=True)
        destinations = [os.path.join(directory, os.path.basename(t.rstrip("/"))) for t in targets]
    elif name == "ln" and len(targets) == 1:
        destinations = [os.path.basename(targets[0].rstrip("/"))]
    elif len(targets) >= 2:
        destinations = [targets[-1]]
        if os.path.isdir(os.path.join(ctx.root, targets[-1])):
            destinations += [os.path.join(targets[-1], os.path.basename(t.rstrip("/"))) for t in targets[:-1]]
    elif any(a in ("-d", "--directory") for a in args) and name == "install":
        destinations = targets
    else:
        destinations = []
    for target in destinations:
        _write(target, ctx, out, name)
    if name == "mv":
        for source in targets[:-1] if directory is None else targets:
            _write(source, ctx, out, name, destructive=True)


def _dd(argv: list[str], ctx: Context, out: Analysis) -> None:
    for arg in argv[1:]:
        if arg.startswith("of="):
            _write(arg[3:], ctx, out, "dd")


def _sed(argv: list[str], ctx: Context, out: Analysis) -> list[str]:
    args = argv[1:]
    in_place = any(
        a.startswith("--in-place") or (_flag(a, "i", "--in-place") and "e" not in a[1 : a.index("i")]) for a in args
    )
    scripted = any(
        a in ("-e", "-f", "--expression", "--file")
        or a.startswith(("--expression=", "--file="))
        or (a.startswith("-") and not a.startswith("--") and a[-1:] in ("e", "f"))
        for a in args
    )
    if in_place:
        files = _positionals(args, frozenset({"-e", "-f", "--expression", "--file", "-l", "--line-length"}))
        for target in files if scripted else files[1:]:
            _write(target, ctx, out, "sed")
    return [argv[0], "--sandbox", *args]  # GNU sed: no e, r or w commands inside the script


def _tar(argv: list[str], ctx: Context, out: Analysis) -> None:
    args = list(argv[1:])
    if args and not args[0].startswith("-"):  # old style: `tar xzf a.tar`
        letters, rest = args[0], args[1:]
        args = []
        for letter in letters:
            args.append("-" + letter)
            if letter in _TAR_VALUES and rest:
                args.append(rest.pop(0))
        args += rest
    mode, archive, directory, strip = "", None, ".", 0
    index = 0
    while index < len(args):
        arg = args[index]
        option, eq, value = arg.partition("=")
        if arg.startswith("--"):
            if option in _TAR_REFUSED or option not in _TAR_LONG:  # exact names only: GNU abbreviations could hide one
                raise Refused("not-permitted", f"tar {_short(option, 40)} is not an option agents may use")
            mode = {
                "--extract": "x",
                "--get": "x",
                "--create": "c",
                "--append": "c",
                "--update": "c",
                "--catenate": "c",
                "--concatenate": "c",
                "--delete": "c",
                "--list": "t",
                "--diff": "t",
                "--compare": "t",
            }.get(option, mode)
            if option in ("--file", "--directory", "--strip-components"):
                if not eq:
                    value = args[index + 1] if index + 1 < len(args) else ""
                    index += 1
                if option == "--file":
                    archive = value
                elif option == "--directory":
                    directory = value
                else:
                    strip = int(value) if value.isdigit() else 0
        elif arg.startswith("-") and arg != "-":
            position = 1
            while position < len(arg):
                letter = arg[position]
                if letter in "PhIFK" or letter not in _TAR_LETTERS:
                    raise Refused("not-permitted", f"tar -{letter} is not allowed for agents")
                if letter in "xcrtudA":
                    mode = {"x": "x", "t": "t", "d": "t"}.get(letter, "c")
                if letter in _TAR_VALUES:
                    value = arg[position + 1 :] or (args[index + 1] if index + 1 < len(args) else "")
                    if not arg[position + 1 :]:
                        index += 1
                    if letter == "f":
                        archive = value
                    elif letter == "C":
                        directory = value
                    break
                position += 1
        index += 1
    if archive is None or archive == "-" or ":" in archive:
        raise Refused("not-permitted", "tar needs -f with an archive file in the workspace")
    _paths([archive, directory], ctx, "tar")
    if mode == "c":
        _write(archive, ctx, out, "tar")
    elif mode == "x":
        _write(directory, ctx, out, "tar", is_dir=True)
        for member in _tar_members(archive, ctx):
            parts = member.split("/")[strip:]
            if parts:
                _write(os.path.join(directory, *parts), ctx, out, "tar")


_TAR_VALUES = frozenset("fCTXbgLNVH")
_TAR_LETTERS = frozenset("AcdrtuxfCTXbgLNVHvzjJaZkmOpsSUWlnowBGiMR")
_TAR_LONG = frozenset(
    """
--extract --get --create --append --update --catenate --concatenate --delete --list --diff --compare --file --directory
--strip-components --verbose --gzip --gunzip --ungzip --bzip2 --xz --lzma --zstd --auto-compress --exclude --exclude-vcs
--exclude-vcs-ignores --no-same-owner --no-same-permissions --preserve-permissions --same-permissions --overwrite
--keep-old-files --skip-old-files --keep-newer-files --touch --mtime --owner --group --numeric-owner --sort --format
--one-file-system --totals --wildcards --no-wildcards --anchored --no-anchored --recursion --no-recursion --checkpoint
--warning --ignore-failed-read --show-transformed-names --null --verbatim-files-from --level --label --mode
--atime-preserve --same-order --preserve-order --blocking-factor --record-size --unlink-first --sparse
--no-overwrite-dir --ignore-zeros --occurrence --to-stdout --stdout --verify --no-xattrs --no-acls --no-selinux
""".split()
)
_TAR_REFUSED = frozenset(
    {
        "--to-command",
        "--use-compress-program",
        "--checkpoint-action",
        "--info-script",
        "--new-volume-script",
        "--rsh-command",
        "--rmt-command",
        "--absolute-names",
        "--transform",
        "--xform",
        "--dereference",
        "--keep-directory-symlink",
        "--force-local",
        "--files-from",
        "--index-file",
        "--listed-incremental",
    }
)


def _tar_members(archive: str, ctx: Context) -> list[str]:
    path = os.path.realpath(os.path.join(ctx.root, archive))
    try:
        with tarfile.open(path, "r:*") as tar:
            members = []
            for count, member in enumerate(tar):
                if count > MAX_ARCHIVE_MEMBERS:
                    raise Refused("not-permitted", "the archive has too many members")
                if not (member.isfile() or member.isdir()):
                    raise Refused("symlink", "archives with links, devices or FIFOs are not extracted for agents")
                _member_name(member.name)
                members.append(member.name)
            return members
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise Refused("invalid-archive", f"cannot read the archive: {type(exc).__name__}") from None


def _member_name(name: str) -> None:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or "\x00" in name:
        raise Refused("path-escape", "an archive member points outside the extraction directory")
    if any(p.casefold().rstrip(". ") == ".git" for p in parts):
        raise Refused("git-internals", "an archive member is inside a .git directory")


def _unzip(argv: list[str], ctx: Context, out: Analysis) -> None:
    args = argv[1:]
    if any(a.startswith("-") and (":" in a or "^" in a) for a in args):
        raise Refused("not-permitted", "unzip -: / -^ allow names outside the directory")
    listing = any(a in ("-l", "-t", "-v", "-Z", "-z", "-p", "-c") for a in args)
    directory = "."
    positional = []
    index = 0
    while index < len(args):
        if args[index] == "-d" and index + 1 < len(args):
            directory = args[index + 1]
            index += 2
            continue
        if args[index].startswith("-d") and len(args[index]) > 2:
            directory = args[index][2:]
        elif args[index] == "-x":
            break
        elif not args[index].startswith("-"):
            positional.append(args[index])
        index += 1
    if not positional:
        return
    if listing:
        return
    junk = any(a.startswith("-") and "j" in a for a in args)
    path = os.path.realpath(os.path.join(ctx.root, positional[0]))
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise Refused("invalid-archive", f"cannot read the archive: {type(exc).__name__}") from None
    _write(directory, ctx, out, "unzip", is_dir=True)
    for info in infos[:MAX_ARCHIVE_MEMBERS]:
        if (info.external_attr >> 16) & 0o170000 not in (0, 0o100000, 0o040000):
            raise Refused("symlink", "archives with links or special files are not extracted for agents")
        _member_name(info.filename)
        _write(os.path.join(directory, os.path.basename(info.filename) if junk else info.filename), ctx, out, "unzip")


def _uniq(argv: list[str], ctx: Context, out: Analysis) -> None:
    files = _positionals(argv[1:], frozenset({"-f", "-s", "-w", "--skip-fields", "--skip-chars", "--check-chars"}))
    if len(files) >= 2:
        _write(files[1], ctx, out, "uniq")


def _split(argv: list[str], ctx: Context, out: Analysis) -> None:
    name = os.path.basename(argv[0])
    values = frozenset(
        {
            "-a",
            "-b",
            "-C",
            "-l",
            "-n",
            "-t",
            "-f",
            "--prefix",
            "--digits",
            "--suffix-length",
            "--additional-suffix",
            "--filter",
            "--bytes",
            "--lines",
            "--line-bytes",
            "--number",
            "--separator",
        }
    )
    if any(a.startswith("--filter") for a in argv[1:]):
        raise Refused("not-permitted", f"{name} --filter runs a shell")
    files = _positionals(argv[1:], values)
    prefix = next(
        (argv[i + 1] for i, a in enumerate(argv[1:], 1) if a in ("-f", "--prefix") and i + 1 < len(argv)), None
    )
    if name == "split":
        prefix = files[1] if len(files) >= 2 else "x"
    _write(prefix or "xx", ctx, out, name)


def _zip(argv: list[str], ctx: Context, out: Analysis) -> None:
    args = argv[1:]
    if any(a == "-TT" or a.startswith("-TT") or a in ("-A",) for a in args):
        raise Refused("not-permitted", "zip -TT runs a command")
    files = _positionals(args, frozenset({"-b", "-t", "-tt", "-n", "-O", "--out", "-x", "-i", "-P", "--password"}))
    if files:
        _write(
            files[0] if files[0].endswith(".zip") or "." in os.path.basename(files[0]) else files[0] + ".zip",
            ctx,
            out,
            "zip",
        )
    if any(a in ("-m", "--move") for a in args):
        for source in files[1:]:
            _write(source, ctx, out, "zip", destructive=True)


def _git(argv: list[str], ctx: Context, out: Analysis) -> list[str]:
    args = argv[1:]
    index = 0
    while index < len(args) and args[index].startswith("-"):
        option = args[index].partition("=")[0]
        if option not in _GIT_GLOBAL_FLAGS:
            raise Refused(
                "not-permitted",
                f"git {_short(option, 40)} is not allowed for agents (it changes git's configuration or repository)",
            )
        index += 1
    verb = args[index] if index < len(args) else ""
    if verb not in GIT_READ_ONLY:
        raise Refused(
            "not-permitted",
            f"git {_short(verb, 40) or '(no subcommand)'} is not for agents: they read with git "
            f"{', '.join(sorted(GIT_READ_ONLY)[:8])}, ...; the git tools commit, and the runner pushes and merges",
        )
    for arg in args[index + 1 :]:
        if arg == "--":
            break
        option = arg.partition("=")[0]
        if option in _GIT_REFUSED_OPTIONS or (option.startswith("-O") and not option.startswith("--")):
            raise Refused("not-permitted", f"git {verb} {_short(option, 40)} runs a program")
    return [argv[0], *GIT_HARDENING, *args]


def _curl_wget(argv: list[str], ctx: Context, out: Analysis) -> None:
    name = os.path.basename(argv[0])
    args = argv[1:]
    if name == "wget" and any(a in ("-e",) or a.startswith(("-e", "--execute")) for a in args):
        raise Refused("not-permitted", "wget -e runs wgetrc commands")
    if name == "wget" and not any(a.startswith(("-O", "--output-document")) or a in ("--spider",) for a in args):
        raise Refused("unknown-write-target", "wget without -O writes a file named by the server")
    if name == "curl":
        if any(
            a in ("-O", "--remote-name", "--remote-name-all", "-J", "--remote-header-name")
            or (a.startswith("-") and not a.startswith("--") and "O" in a)
            for a in args
        ):
            raise Refused("unknown-write-target", "curl -O writes a file named by the server; use -o FILE")
        if any(a in ("-K", "--config") or a.startswith("--config=") for a in args):
            raise Refused("not-permitted", "curl --config reads more options from a file")
    for index, arg in enumerate(args):
        if name == "wget" and arg.startswith("-O"):
            target = arg[2:] or (args[index + 1] if index + 1 < len(args) else "")
            if target != "-":
                _write(target, ctx, out, name)
        if name == "curl" and arg in ("-D", "-c") and index + 1 < len(args):
            _write(args[index + 1], ctx, out, name)


_HANDLERS = {
    **dict.fromkeys(_WRITE_ALL, _writes_all),
    **dict.fromkeys(_FIRST_ARG_NOT_A_PATH, _writes_after_first),
    **dict.fromkeys(_DESTINATION_LAST, _destination),
    "dd": _dd,
    "sed": _sed,
    "tar": _tar,
    "unzip": _unzip,
    "uniq": _uniq,
    "split": _split,
    "csplit": _split,
    "git": _git,
    "curl": _curl_wget,
    "wget": _curl_wget,
    "zip": _zip,
}
_KNOWN = frozenset(_HANDLERS)


def _fragments(token: str) -> list[str]:
    """The parts of an argument that may name a path: the token, an option's value, a glued
    short option's value, and `:`/`,`-separated pieces (`--cov-report=xml:out.xml`)."""
    parts = [token]
    if "=" in token:
        parts.append(token.split("=", 1)[1])
    if any(_URL.match(part) for part in parts):  # a URL names no local path (file:// is refused)
        return [part for part in parts if not _URL.match(part)][:0]
    if token.startswith("-") and not token.startswith("--") and len(token) > 2:
        parts.append(token[2:])
    more = []
    for part in parts:
        for sep in (":", ","):
            if sep in part:
                more += part.split(sep)
    found = [p for p in parts + more if p]
    return found + [p[1:] for p in found if p[:1] in "@<"]  # curl's @file, <file


_URL = re.compile(r"^(?:https?|ftp|ftps|s3|gs)://", re.IGNORECASE)


def _is_git_name(part: str) -> bool:
    return part.casefold().rstrip(". ") == ".git"


def _paths(args: list[str] | tuple[str, ...], ctx: Context, program: str) -> None:
    """No argument may reach outside the workspace (absolute, `..`, `~`, or a symbolic link that
    leads out), nor into the git directory, for reading or writing."""
    for token in args:
        values = [v for v in _fragments(token) if v not in _DEV_OK]
        for value in values:
            if value.startswith("~"):
                raise Refused("path-outside-workspace", f"{_short(token)}: home-relative paths are not allowed")
            candidate = os.path.join(ctx.root, value)
            if (value.startswith("/") or ".." in value.split("/") or os.path.lexists(candidate)) and not ctx.inside(
                os.path.realpath(candidate)
            ):
                raise Refused("path-outside-workspace", f"{_short(token)} points outside the workspace")
        option = token.partition("=")[0] if token.startswith("--") else ""
        if "exclude" in option or "ignore" in option:
            continue  # names what not to touch (`--exclude-dir=.git`)
        for value in values:
            if any(_is_git_name(part) for part in value.split("/")):
                raise Refused(
                    "git-internals", f"{_short(token)}: the git directory is not for commands; use the git tools"
                )
            if ctx.in_git(os.path.realpath(os.path.join(ctx.root, value))):
                raise Refused("git-internals", f"{_short(token)} leads into the git directory")


def _write(
    target: str, ctx: Context, out: Analysis, program: str, *, is_dir: bool = False, destructive: bool = False
) -> None:
    if SECRET_REF.search(target):
        raise Refused("secret-in-path", f"{program}: a secret may not name a file")
    if target in _DEV_OK:
        return
    _paths([target], ctx, program)
    full = os.path.join(ctx.root, target)
    real = os.path.realpath(full)
    if not ctx.inside(real):
        raise Refused("path-outside-workspace", f"{program} would write {_short(target)} outside the workspace")
    if ctx.in_git(real) or (destructive and (real == ctx.root or ctx.gitdir.startswith(real + os.sep))):
        raise Refused("git-internals", f"{program} would write into the git directory ({_short(target)})")
    rel = os.path.relpath(real, ctx.root)
    out.writes.append((rel, is_dir or os.path.isdir(real)))


def approvals(writes: list[tuple[str, bool]], ask: list[str]) -> list[tuple[str, str]]:
    """(ask entry, path) pairs a command's writes need, by the same `write:<glob>` rules as
    write_file; a directory needs the approval of every glob that could match inside it."""
    needed: list[tuple[str, str]] = []
    for entry in ask:
        if not entry.startswith("write:"):
            continue
        glob = entry.removeprefix("write:")
        literal = re.split(r"[*?\[]", glob, maxsplit=1)[0]
        for rel, is_dir in writes:
            hit = fnmatchcase(rel, glob) or (
                is_dir and (rel == "." or fnmatchcase(rel + "/x", glob) or literal.startswith(rel.rstrip("/") + "/"))
            )
            if hit:
                needed.append((entry, rel))
                break
    return needed

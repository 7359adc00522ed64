"""The pure pieces: the command parser (what really runs, what it writes), policy verdicts,
environment scrubbing, secret masking."""

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from nexus.agent_runner.hypervisor import cmdparse, commands
from nexus.agent_runner.hypervisor.errors import Refused
from nexus.agent_runner.hypervisor.secrets import SecretBox, UnknownSecret
from nexus.domain.agents import CommandPolicy

PATH = os.environ["PATH"]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "README.md").write_text("x\n")
    (root / "src").mkdir()
    (root / "deploy").mkdir()
    return root


def verdict(ws: Path, cmd: str, policy: CommandPolicy, ask: list[str] | None = None) -> str:
    plan = cmdparse.analyze(cmdparse.split(cmd), cmdparse.Context(str(ws), PATH))
    return commands.decide(cmd, plan.layers, policy, ask or [])[0]


@pytest.mark.parametrize(
    ("cmd", "policy", "ask", "expected"),
    [
        ("ls", CommandPolicy(allow=["cat *"]), [], "deny"),  # the default is deny
        ("ls", CommandPolicy(allow=["cat *"], default="allow"), [], "allow"),
        ("ls", CommandPolicy(allow=["cat *"]), ["command"], "ask"),
        ("cat README.md", CommandPolicy(allow=["cat *"]), ["command"], "allow"),
        ("git   status", CommandPolicy(allow=["git status"]), [], "allow"),
        ("rm -rf src", CommandPolicy(deny=["rm *"], default="allow"), ["command"], "deny"),
        ("/usr/bin/rm -rf src", CommandPolicy(deny=["rm *"], default="allow"), [], "deny"),
        # Wrappers do not hide the program: deny is matched on every layer, allow on the last.
        ("nice -n 5 rm -rf src", CommandPolicy(allow=["nice *"], deny=["rm *"]), [], "deny"),
        ("timeout 5 nohup stdbuf -oL rm -rf src", CommandPolicy(allow=["timeout *"], deny=["rm *"]), [], "deny"),
        ("env LANG=C rm src", CommandPolicy(allow=["env *"]), [], "deny"),
        ("timeout 60 cat README.md", CommandPolicy(allow=["cat *"]), [], "allow"),
        (
            "find src -name x -exec grep y {} +",
            CommandPolicy(allow=["grep *"]),
            [],
            "deny",
        ),  # find itself is not allowed
        ("find src -name x -exec grep y {} +", CommandPolicy(allow=["grep *", "find *"]), [], "allow"),
        (
            "ionice -c 3 taskset 1 chrt -o 0 setsid -w flock README.md rm src",
            CommandPolicy(allow=["*"], deny=["rm *"]),
            [],
            "deny",
        ),
    ],
)
def test_policy_verdicts(ws: Path, cmd: str, policy: CommandPolicy, ask: list[str], expected: str) -> None:
    assert verdict(ws, cmd, policy, ask) == expected


@pytest.mark.parametrize(
    ("cmd", "reason"),
    [
        ("sh -c id", "shell-not-allowed"),
        ("rbash", "shell-not-allowed"),
        ("env -S 'sh -c id'", "shell-not-allowed"),
        ("env -S'bash -c id'", "shell-not-allowed"),
        ("nice nohup timeout 9 dash", "shell-not-allowed"),
        ("xargs -a README.md bash", "shell-not-allowed"),
        ("find . -exec sh -c id ;", "shell-not-allowed"),
        ("python3 -c 1", "interpreter-not-allowed"),
        ("perl -e 1", "interpreter-not-allowed"),
        ("awk BEGIN{system(1)}", "interpreter-not-allowed"),
        ("make", "interpreter-not-allowed"),
        ("./README.md", "workspace-program-not-allowed"),
    ],
)
def test_code_runners_need_an_explicit_allow(ws: Path, cmd: str, reason: str) -> None:
    with pytest.raises(Refused) as exc:
        verdict(ws, cmd, CommandPolicy(allow=["*"], default="allow"))
    assert exc.value.reason == reason


def test_a_named_interpreter_runs(ws: Path) -> None:
    policy = CommandPolicy(allow=["python3 -m pytest*", "sh -c *"])
    assert verdict(ws, "python3 -m pytest -q", policy) == "allow"
    assert verdict(ws, "timeout 60 python3 -m pytest -q", policy) == "allow"
    assert verdict(ws, "sh -c 'echo a'", policy) == "allow"
    with pytest.raises(Refused):
        verdict(ws, "python3 -c 1", policy)


@pytest.mark.parametrize(
    ("cmd", "reason"),
    [
        ("env --u X sh", "unknown-option"),  # an abbreviation could hide a value
        ("env -S 'sh${IFS}-c id'", "not-permitted"),
        ("timeout --sig KILL 5 sh", "unknown-option"),
        ("flock -c id README.md", "not-permitted"),
        ("git -c alias.st=!sh st", "not-permitted"),
        ("git --config-env=core.pager=X log", "not-permitted"),
        ("git --exec-path=. status", "not-permitted"),
        ("git -C src status", "not-permitted"),
        ("git push origin main", "not-permitted"),
        ("git merge other", "not-permitted"),
        ("git config user.name x", "not-permitted"),
        ("git st", "not-permitted"),  # an alias is not a read-only subcommand
        ("git diff --ext-diff", "not-permitted"),
        ("git grep -Osh x", "not-permitted"),
        ("git log --output=.git/config", "git-internals"),
        ("git log --output=.GIT/config", "git-internals"),
        ("cp README.md .git/hooks/pre-commit", "git-internals"),
        ("sed -i s/a/b/ .git/config", "git-internals"),
        ("find . -delete", "git-internals"),
        ("rm -rf .", "git-internals"),
        ("find src -exec rm {} ;", "indirect-write"),
        ("find -L src -name x", "not-permitted"),
        ("dd if=README.md of=/tmp/x", "path-outside-workspace"),
        ("tee ../x", "path-outside-workspace"),
        ("cat ~/.ssh/id_rsa", "path-outside-workspace"),
        ("cat /etc/hostname", "path-outside-workspace"),
        ("cat /proc/1/environ", "path-outside-workspace"),
        ("patch -p1 -i x.diff", "use-apply-patch"),
        ("sudo ls", "not-permitted"),
        ("wget http://example.invalid/x", "unknown-write-target"),
        ("curl -O http://example.invalid/x", "unknown-write-target"),
        ("tar -xf x.tar --to-command=sh", "not-permitted"),
        ("tar -cf out.tar -I sh src", "not-permitted"),
        ("tar -cf out.tar -h src", "not-permitted"),
        ("echo ${secret:A}", "secret-in-argv"),
        ("LD_PRELOAD=./x.so ls", "env-not-allowed"),
        ("TAR_OPTIONS=--to-command=sh tar -tf x.tar", "env-not-allowed"),
        ("X=a${secret:A} printenv X", "env-not-allowed"),
        ("git-upload-pack .", "not-permitted"),
    ],
)
def test_structural_refusals(ws: Path, cmd: str, reason: str) -> None:
    with pytest.raises(Refused) as exc:
        verdict(ws, cmd, CommandPolicy(allow=["*"], default="allow"))
    assert exc.value.reason == reason, exc.value.detail


def test_xargs_arguments_from_its_file_are_checked(ws: Path) -> None:
    policy = CommandPolicy(allow=["*"], default="allow")
    (ws / "ok.list").write_text("README.md\nsrc\n")
    assert verdict(ws, "xargs -a ok.list cat", policy) == "allow"
    for content, reason in (
        ("/etc/shadow\n", "path-outside-workspace"),
        ("README.md --output=x\n", "not-permitted"),
        (".git/config\n", "git-internals"),
    ):
        (ws / "bad.list").write_text(content)
        with pytest.raises(Refused) as exc:
            verdict(ws, "xargs -a bad.list cat", policy)
        assert exc.value.reason == reason
    with pytest.raises(Refused) as exc:
        verdict(ws, "xargs -a ok.list cp", policy)
    assert exc.value.reason == "indirect-write"


def test_symlinks_are_followed_by_the_check(ws: Path) -> None:
    os.symlink("/etc/passwd", ws / "out")
    os.symlink(".git", ws / "g")
    for cmd, reason in (
        ("cat out", "path-outside-workspace"),
        ("cp README.md g/config", "git-internals"),
        ("git log --output=g/config", "git-internals"),
    ):
        with pytest.raises(Refused) as exc:
            verdict(ws, cmd, CommandPolicy(allow=["*"]))
        assert exc.value.reason == reason


def test_archives_are_read_before_extraction(ws: Path, tmp_path: Path) -> None:
    def archive(name: str, *members: tuple[str, bytes | str]) -> None:
        with tarfile.open(ws / name, "w") as tar:
            for member, content in members:
                info = tarfile.TarInfo(member)
                if isinstance(content, str):
                    info.type, info.linkname = tarfile.SYMTYPE, content
                    tar.addfile(info)
                else:
                    info.size = len(content)
                    import io

                    tar.addfile(info, io.BytesIO(content))

    archive("ok.tar", ("src/a.txt", b"a"))
    archive("hook.tar", (".git/hooks/pre-commit", b"x"))
    archive("link.tar", ("esc", "/etc"))
    archive("up.tar", ("../x", b"x"))
    plan = cmdparse.analyze(cmdparse.split("tar -xf ok.tar -C src"), cmdparse.Context(str(ws), PATH))
    assert ("src/src/a.txt", False) in plan.writes
    plan = cmdparse.analyze(cmdparse.split("tar xf ok.tar"), cmdparse.Context(str(ws), PATH))  # old-style letters
    assert ("src/a.txt", False) in plan.writes
    for name, reason in (("hook.tar", "git-internals"), ("link.tar", "symlink"), ("up.tar", "path-escape")):
        with pytest.raises(Refused) as exc:
            cmdparse.analyze(cmdparse.split(f"tar -xf {name}"), cmdparse.Context(str(ws), PATH))
        assert exc.value.reason == reason


@pytest.mark.parametrize(
    ("cmd", "writes"),
    [
        ("cp README.md deploy/x", ["deploy/x"]),
        ("cp -t deploy README.md", ["deploy", "deploy/README.md"]),
        ("mv README.md src", ["src", "src/README.md", "README.md"]),
        ("sed -i s/a/b/ README.md", ["README.md"]),
        ("sed -n p README.md", []),
        ("sort -o deploy/s README.md", ["deploy/s"]),
        ("git log -1 --output=deploy/l", ["deploy/l"]),
        ("dd if=README.md of=deploy/d", ["deploy/d"]),
        ("tee deploy/a deploy/b", ["deploy/a", "deploy/b"]),
        ("ln -s README.md deploy/l", ["deploy/l"]),
        ("touch deploy/t", ["deploy/t"]),
        ("chmod 644 README.md", ["README.md"]),
        ("timeout 5 rm deploy/x", ["deploy/x"]),
        ("find deploy -name x -delete", ["deploy"]),
        ("uniq README.md deploy/u", ["deploy/u"]),
    ],
)
def test_writes_are_found(ws: Path, cmd: str, writes: list[str]) -> None:
    plan = cmdparse.analyze(cmdparse.split(cmd), cmdparse.Context(str(ws), PATH))
    assert [rel for rel, _ in plan.writes] == writes


def test_write_approvals_cover_directories(ws: Path) -> None:
    ask = ["write:deploy/*", "command"]
    assert cmdparse.approvals([("deploy/x", False)], ask) == [("write:deploy/*", "deploy/x")]
    assert cmdparse.approvals([("src/x", False)], ask) == []
    assert cmdparse.approvals([("deploy", True)], ask) == [("write:deploy/*", "deploy")]
    assert cmdparse.approvals([(".", True)], ask) == [("write:deploy/*", ".")]


def test_scrubbed_environment() -> None:
    base = {
        "PATH": "/usr/bin:.:relative:/ws/bin:/bin",
        "NEXUS_TOKEN": "t",
        "nexus_x": "y",
        "LANG": "C.UTF-8",
        "AWS": "has-s3cret-inside",
    }
    env = commands.scrub_env(base, "/ws", ["s3cret"])
    assert env == {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/ws", "GIT_TERMINAL_PROMPT": "0"}
    command = commands.command_env({**env, "OTHER": "x"})
    assert command == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_OPTIONAL_LOCKS": "0",
    }


def test_secret_box() -> None:
    box = SecretBox({"A": "alpha-secret", "AB": "alpha-secret-longer", "EMPTY": ""})
    assert box.substitute("x ${secret:A} ${secret:EMPTY}") == "x alpha-secret "
    with pytest.raises(UnknownSecret):
        box.substitute("${secret:NOPE}")
    assert box.mask("alpha-secret-longer and alpha-secret") == "${secret:AB} and ${secret:A}"
    assert box.mask_cut("output ... alpha-sec") == "output ... "
    assert box.mask_cut("output ... plain") == "output ... plain"
    assert box.mask("nothing here") == "nothing here"


def test_output_is_masked_before_it_is_cut() -> None:
    box = SecretBox({"A": "alpha-secret"})
    raw = b"x" * 6 + b"alpha-secret" + b"tail"
    outcome = commands.CommandOutcome(
        exit_code=0, output=raw, total_bytes=len(raw), truncated=True, timed_out=False, duration_ms=1
    )
    shown = commands.render(outcome, 10, box.mask, box.mask_cut)
    assert shown == "xxxxxx${se" and "alph" not in shown

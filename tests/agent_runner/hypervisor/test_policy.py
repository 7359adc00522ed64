"""The pure pieces: command policy verdicts, argv checks, environment scrubbing, secret masking."""

import pytest

from nexus.agent_runner.hypervisor import commands
from nexus.agent_runner.hypervisor.errors import Refused
from nexus.agent_runner.hypervisor.secrets import SecretBox, UnknownSecret
from nexus.domain.agents import CommandPolicy


@pytest.mark.parametrize(
    ("cmd", "policy", "ask", "verdict"),
    [
        ("pytest -q", CommandPolicy(allow=["pytest*"], default="deny"), [], "allow"),
        ("ls", CommandPolicy(allow=["pytest*"], default="deny"), [], "deny"),
        ("ls", CommandPolicy(allow=["pytest*"], default="allow"), [], "allow"),
        ("ls", CommandPolicy(allow=["pytest*"]), ["command"], "ask"),
        ("pytest -q", CommandPolicy(allow=["pytest*"]), ["command"], "allow"),
        ("git push --force", CommandPolicy(allow=["git *"], deny=["git push*"]), [], "deny"),
        ("/usr/bin/git push", CommandPolicy(allow=["git *"], deny=["git push*"]), [], "deny"),
        ("./git status", CommandPolicy(allow=["git *"], default="deny"), [], "deny"),
        ("git   status", CommandPolicy(allow=["git status"], default="deny"), [], "allow"),
        ("rm -rf x", CommandPolicy(deny=["rm *"]), ["command"], "deny"),
    ],
)
def test_policy_verdicts(cmd: str, policy: CommandPolicy, ask: list[str], verdict: str) -> None:
    assert commands.decide(cmd, commands.parse(cmd), policy, ask)[0] == verdict


@pytest.mark.parametrize(
    ("cmd", "refused"),
    [
        ("cat README.md", False),
        ("cat ./src/../README.md", False),
        ("git diff HEAD..main", False),
        ("grep -r x /dev/null", False),
        ("/usr/bin/env", False),
        ("cat /etc/hostname", True),
        ("cat src/../../x", True),
        ("tar -xf x.tar --directory=/tmp", True),
        ("tar -C/tmp -xf x.tar", True),
        ("ls ~root", True),
        ("/opt/evil/bin/tool", True),
    ],
)
def test_argument_paths(tmp_path: object, cmd: str, refused: bool) -> None:
    root = str(tmp_path)
    dirs = commands.program_dirs({"PATH": "/usr/local/bin:/usr/bin:/bin"})
    if refused:
        with pytest.raises(Refused) as exc:
            commands.check_paths(commands.parse(cmd), root, dirs)
        assert exc.value.reason == "path-outside-workspace"
    else:
        commands.check_paths(commands.parse(cmd), root, dirs)


def test_scrubbed_environment() -> None:
    base = {"PATH": "/usr/bin:.:relative:/ws/bin:/bin", "NEXUS_TOKEN": "t", "nexus_x": "y", "LANG": "C.UTF-8",
            "AWS": "has-s3cret-inside"}
    env = commands.scrub_env(base, "/ws", ["s3cret"])
    assert env == {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/ws", "GIT_TERMINAL_PROMPT": "0"}


def test_git_verbs() -> None:
    assert commands.check_git(commands.parse("git -C sub -c a=b status"), can_merge=False) is None
    assert commands.check_git(commands.parse("git merge x"), can_merge=True) == "merge"
    with pytest.raises(Refused):
        commands.check_git(commands.parse("git --git-dir .git push"), can_merge=True)


def test_secret_box() -> None:
    box = SecretBox({"A": "alpha-secret", "AB": "alpha-secret-longer", "EMPTY": ""})
    assert box.substitute("x ${secret:A} ${secret:EMPTY}") == "x alpha-secret "
    with pytest.raises(UnknownSecret):
        box.substitute("${secret:NOPE}")
    assert box.mask("alpha-secret-longer and alpha-secret") == "${secret:AB} and ${secret:A}"
    assert box.mask_cut("output ... alpha-sec") == "output ... "
    assert box.mask_cut("output ... plain") == "output ... plain"
    assert box.mask("nothing here") == "nothing here"

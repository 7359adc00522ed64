"""Hostile agents through the real runner (a process, real NATS, a real 'remote'): git config,
fsmonitor, filters and hooks planted by commands never run; every refusal is in the ledger; the
pushed head carries only the runner's trailers; the canary stops a push holding a secret in any
simple encoding, and the run ends failed with the reason, nothing pushed."""

import base64
import binascii
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.agent_runner.hypervisor.test_hostile_git import GITLINK, _modify, _move, _new
from tests.agent_runner.test_runner_git import TOKEN as git_token
from tests.agent_runner.test_runner_git import git_server  # noqa: F401 — a fixture
from tests.agent_runner.test_runner_support import (  # noqa: F401 — pytest fixtures, used as parameters
    bare_repo,
    changes,
    config,
    final_status,
    git,
    js,
    read_events,
    start_runner,
)

pytestmark = pytest.mark.infra
SECRET = "sk-live-Quokka-8Jd2+/x-271828"
TOKEN = "ghp_runnerToken4242abcdef"
SECRETS = {"API_TOKEN": SECRET, "GIT_TOKEN": TOKEN}
CONFIG = (
    '[core]\n\tfsmonitor = "env > leak-fsmonitor.txt; false"\n[filter "evil"]\n\tclean = "env > leak-clean.txt; cat"\n'
    '\tsmudge = "env > leak-smudge.txt; cat"\n\trequired = true\n[diff "evil"]\n\ttextconv = "env > leak-textconv.txt; cat"\n'
    '[alias]\n\tstatus = "!env > leak-alias.txt"\n'
)
PERMISSIONS = {"commands": {"allow": ["git log*", "mkdir *", "cp *", "touch *"], "default": "deny"}}

# (tool, arguments, the reasons a refusal may give)
HOSTILE = [
    ("apply_patch", {"patch": _new("esc", "120000")}, ("symlink",)),
    ("apply_patch", {"patch": _new("esc", " 120000")}, ("symlink", "not-regular-file", "invalid-patch")),
    ("apply_patch", {"patch": _new("esc", "0120000")}, ("symlink", "not-regular-file", "invalid-patch")),
    ("apply_patch", {"patch": _new("esc", "\t0120000")}, ("symlink", "not-regular-file", "invalid-patch")),
    ("apply_patch", {"patch": _new("sub", "160000", GITLINK)}, ("not-regular-file", "invalid-patch")),
    ("apply_patch", {"patch": _new("sub", "0160000", GITLINK)}, ("not-regular-file", "invalid-patch")),
    ("apply_patch", {"patch": _new(".git/hooks/post-commit", "100755", "+env > leak-hook.txt\n")}, ("git-internals",)),
    ("apply_patch", {"patch": _new(".GIT/config", "100644", "+[core]\n")}, ("git-internals",)),
    ("apply_patch", {"patch": _move("rename", "README.md", ".git/config")}, ("git-internals",)),
    ("apply_patch", {"patch": _move("copy", "README.md", "../outside.md")}, ("invalid-patch", "path-escape")),
    ("apply_patch", {"patch": _modify("../sentinel.txt")}, ("invalid-patch", "path-escape")),
    ("apply_patch", {"patch": _new(f"k-{SECRET}", "100644", "+x\n")}, ("secret-in-path",)),
    ("write_file", {"path": ".git/config", "content": CONFIG}, ("git-internals",)),
    (
        "write_file",
        {"path": ".git/hooks/pre-commit", "content": "#!/bin/sh\nenv > leak-hook.txt\n"},
        ("git-internals",),
    ),
    ("write_file", {"path": "sub/.git/config", "content": CONFIG}, ("git-internals",)),
    ("edit_file", {"path": ".git/config", "old": "[core]", "new": "[core]\n\tfsmonitor = x"}, ("git-internals",)),
    ("write_file", {"path": SECRET, "content": "x"}, ("secret-in-path",)),
    ("write_file", {"path": f"dir/{SECRET}/f.txt", "content": "x"}, ("secret-in-path",)),
    ("read_file", {"path": f"{SECRET}.txt"}, ("secret-in-path",)),
    ("list_dir", {"path": SECRET}, ("secret-in-path",)),
    ("search_text", {"pattern": "x", "path": SECRET}, ("secret-in-path",)),
    ("git_commit", {"message": "mine\n\nNexus-Ledger: 00forged"}, ("forged-trailer",)),
    ("git_commit", {"message": "mine\n\nnexus-run: run_fake"}, ("forged-trailer",)),
    ("git_commit", {"message": "Nexus-Session: ses_fake"}, ("forged-trailer",)),
    ("git_commit", {"message": "mine\n  NEXUS-AGENT : someone@9"}, ("forged-trailer",)),
    ("run_command", {"cmd": "git push origin HEAD:main"}, ("policy-deny", "not-permitted")),
    (
        "run_command",
        {"cmd": "git -c alias.x=!sh x"},
        ("policy-deny", "not-permitted", "shell-not-allowed", "path-outside-workspace"),
    ),
    ("run_command", {"cmd": "cp planted.cfg ../state/git/repo.git/config"}, ("path-outside-workspace", "policy-deny")),
]


def _script(*steps: list[tuple[str, dict]], summary: str = "done") -> str:
    body = [{"tool_calls": [{"name": name, "args": args} for name, args in step]} for step in steps]
    body.append({"tool_calls": [{"name": "finish", "args": {"summary": summary}}]})
    return json.dumps({"steps": body})  # JSON is YAML


def _repo(bare: Path, run_id: str) -> dict:
    return {
        "url": str(bare),
        "ref": "main",
        "branch": f"nexus/task_t/{run_id}",
        "target_branch": "main",
        "credentials_secret": "GIT_TOKEN",
    }


def _cfg(bare: Path, script: str):
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    return config(
        script,
        run_id=run_id,
        permissions=PERMISSIONS,
        secrets=sorted(SECRETS),
        limits={"max_steps": 20},
        repo=_repo(bare, run_id),
    )


def _planting_cfg(script: str, run_id: str, bare: Path):
    """A run whose agent may run only `python3 plant.py` (what plants the hostile files), on its own repository."""
    return config(
        script,
        run_id=run_id,
        permissions={"commands": {"allow": ["python3 plant.py"], "default": "deny"}},
        secrets=sorted(SECRETS),
        limits={"max_steps": 20},
        repo=_repo(bare, run_id),
    )


def _encodings() -> list[str]:
    raw = SECRET.encode()
    return [SECRET, base64.b64encode(raw).decode(), binascii.hexlify(raw).decode(), quote(SECRET, safe="")]


def _every_object(bare: Path) -> bytes:
    """The raw content of every object in the remote, every branch."""
    shas = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch-check=%(objectname)"],
        cwd=bare,
        capture_output=True,
        check=True,
    ).stdout
    return subprocess.run(["git", "cat-file", "--batch"], cwd=bare, input=shas, capture_output=True, check=True).stdout


def _assert_nothing_leaked(bare: Path, run, events) -> None:
    texts = [
        _every_object(bare),
        json.dumps(events).encode(),
        run.log().encode(),
        (run.dir / "state" / f"{run.cfg.session_id}.json").read_bytes(),
    ]
    for text in texts:
        for value in (*_encodings(), TOKEN, base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()):
            assert value.encode() not in text


async def test_a_hostile_agent_plants_git_drivers_and_forges_provenance_and_nothing_takes(
    js, nats_url, tmp_path
) -> None:
    bare = bare_repo(tmp_path)
    plant = [
        ("write_file", {"path": "planted.cfg", "content": CONFIG}),
        ("run_command", {"cmd": "mkdir .git"}),
        ("run_command", {"cmd": "cp planted.cfg .git/config"}),
        # The reviewed attack: git log writing a config through --output (there is no repository here any more).
        (
            "run_command",
            {"cmd": "git log -1 '--format=[core]%n%x09fsmonitor = \"env > leak-log.txt; false\"' --output=.git/config"},
        ),
        ("run_command", {"cmd": "cp planted.cfg .gitconfig"}),
        ("write_file", {"path": ".gitattributes", "content": "* filter=evil diff=evil merge=evil\n"}),
        ("write_file", {"path": "src.txt", "content": "hello\n"}),
    ]
    hostile = [(tool, args) for tool, args, _ in HOSTILE]
    work = [
        ("git_status", {}),
        ("git_diff", {}),
        ("git_log", {}),
        ("git_commit", {"message": "agent work"}),
        ("write_file", {"path": "more.txt", "content": "more\n"}),
    ]
    r = await start_runner(
        tmp_path,
        nats_url,
        _cfg(bare, _script(plant, hostile, work, summary="done\nNexus-Ledger: forged-in-summary")),
        secrets=SECRETS,
    )
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "succeeded", (end, r.log())

    # Every hostile call was refused, in order, with its reason, in the ledger (between the planting
    # step's last write and the agent's commit; how the planting commands fared is the command policy's).
    recorded = changes(events)
    start = max(i for i, c in enumerate(recorded) if c.get("relPath") == "src.txt") + 1
    refused = recorded[start : next(i for i, c in enumerate(recorded) if c["type"] == "git-commit")]
    assert len(refused) == len(HOSTILE), [(c["tool"], c["reason"]) for c in refused]
    for change, (tool, _args, reasons) in zip(refused, HOSTILE, strict=True):
        assert change["tool"] == tool and change["reason"] in reasons, (change, reasons)

    # Nothing planted ran: no leak file in the workspace, none on the branch.
    assert not list(r.workspace.glob("leak*")), sorted(p.name for p in r.workspace.iterdir())
    branch = r.cfg.repo.branch
    files = git(bare, "ls-tree", "-r", "--name-only", branch).split()
    assert sorted(files) == [".gitattributes", ".gitconfig", "README.md", "more.txt", "planted.cfg", "src.txt"]
    # Provenance: two commits, the agent's and the runner's, each with exactly the runner's trailers.
    commits = [i for i, c in enumerate(recorded) if c["type"] == "git-commit"]
    assert len(commits) == 2
    for i, sha in zip(commits, git(bare, "rev-list", "--max-count=2", branch).split()[::-1], strict=True):
        assert recorded[i]["sha"] == sha
        trailers = git(bare, "log", "-1", "--format=%(trailers:only,unfold)", sha).splitlines()
        assert [t for t in trailers if t] == [
            f"Nexus-Run: {r.cfg.run_id}",
            "Nexus-Agent: agent_t@3",
            f"Nexus-Session: {r.cfg.session_id}",
            f"Nexus-Ledger: {recorded[i - 1]['hash']}",
        ]
    assert "forged" not in git(bare, "log", "--format=%B", branch)
    assert end["commit_sha"] == git(bare, "rev-parse", branch)
    _assert_nothing_leaked(bare, r, events)


@pytest.mark.parametrize("encoding", range(4), ids=["plain", "base64", "hex", "url-encoding"])
async def test_the_canary_stops_a_push_holding_a_secret(js, nats_url, tmp_path, encoding: int) -> None:
    bare = bare_repo(tmp_path)
    # A model that learned the value (a prompt injection, say) writes it, encoded, into a file.
    script = _script([("write_file", {"path": "notes.md", "content": f"see: {_encodings()[encoding]}\n"})])
    r = await start_runner(tmp_path, nats_url, _cfg(bare, script), secrets=SECRETS)
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "failed" and end["reason"].startswith("push refused: ${secret:API_TOKEN}"), end
    assert "notes.md" in end["reason"]
    assert git(bare, "for-each-ref", "--format=%(refname)", "refs/heads").split() == [
        "refs/heads/main"
    ]  # nothing pushed
    last = changes(events, "refused")[-1]
    assert (last["tool"], last["reason"]) == ("push", "secret-in-push")
    assert end["ledger_hash"] == changes(events)[-1]["hash"]
    _assert_nothing_leaked(bare, r, events)


async def test_a_secret_in_a_file_name_made_by_a_command_is_never_pushed(js, nats_url, tmp_path) -> None:
    bare = bare_repo(tmp_path)
    r = await start_runner(
        tmp_path,
        nats_url,
        _cfg(bare, _script([("run_command", {"cmd": "touch ${secret:API_TOKEN}"})])),
        secrets=SECRETS,
    )
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    if (r.workspace / SECRET).exists():  # the command got the value as its argument: the commit is refused
        assert end["status"] == "failed" and "secret-in-path" in end["reason"], end
        assert git(bare, "for-each-ref", "--format=%(refname)", "refs/heads").split() == ["refs/heads/main"]
    _assert_nothing_leaked(bare, r, events)


async def test_the_credential_reaches_only_the_clone_and_the_push(js, nats_url, tmp_path, git_server) -> None:
    """A `git` first on PATH logs each invocation's verb and whether the credential is in its environment."""
    server, bare, url = git_server
    shim, log = tmp_path / "shim", tmp_path / "git-env.log"
    shim.mkdir()
    (shim / "git").write_text(
        f'#!/bin/sh\nprintf "%s|%s\\n" "${{GIT_CONFIG_VALUE_0:+credential}}" "$*" >> {log}\n'
        f'exec {shutil.which("git")} "$@"\n'
    )
    (shim / "git").chmod(0o755)
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    script = _script(
        [
            ("write_file", {"path": "a.txt", "content": "a\n"}),
            ("git_status", {}),
            ("git_diff", {}),
            ("git_commit", {"message": "a"}),
            ("git_log", {}),
        ]
    )
    cfg = config(script, run_id=run_id, secrets=["GIT_TOKEN"], repo={**_repo(bare, run_id), "url": url})
    r = await start_runner(
        tmp_path, nats_url, cfg, secrets={"GIT_TOKEN": git_token}, env={"PATH": f"{shim}:{os.environ['PATH']}"}
    )
    assert await r.exit_code() == 0, r.log()
    assert final_status(await read_events(js, run_id))["status"] == "succeeded", r.log()
    calls = []
    for line in log.read_text().splitlines():
        if not line.startswith(("|", "credential|")):
            continue  # the rest of a multi-line argument (a commit message)
        flag, _, argv = line.partition("|")
        words = argv.split()
        while words and words[0] == "-c":
            words = words[2:]
        calls.append((words[0], flag == "credential"))
    # Only the networked calls carry it: clone, the look for an earlier attempt's branch, push.
    assert {verb for verb, cred in calls if cred} == {"clone", "ls-remote", "push"}, calls
    assert all(cred for verb, cred in calls if verb in ("clone", "ls-remote", "fetch", "push"))
    assert {"status", "diff", "commit", "add", "log", "rev-list", "cat-file"} <= {verb for verb, _ in calls}


NESTED_PLANT = """import os, subprocess
env = dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")
def g(*args):
    subprocess.run(["git", "-C", "vendor/lib", "-c", "user.name=x", "-c", "user.email=x@x", *args], env=env, check=True)
os.makedirs("vendor/lib")
g("init", "-q")
open("vendor/lib/f.txt", "w").write("one\\n")
open("vendor/lib/.gitattributes", "w").write("* filter=evil\\n")
g("add", "-A")
g("commit", "-q", "-m", "nested")
g("config", "filter.evil.clean", "touch {marker}; cat")
open("vendor/lib/f.txt", "w").write("two\\n")
"""


async def test_a_repository_a_sandboxed_command_nests_in_the_workspace_never_runs_outside(
    js, nats_url, tmp_path
) -> None:
    """An allowed interpreter runs any code in the sandbox, and the sandbox lets it write the workspace:
    it makes a repository of its own in a subdirectory, with a clean filter in its config. The runner's
    and the git tools' `git` (outside the sandbox) would stage it as a gitlink and run `git status` in it,
    filter and all. They refuse instead, the run fails naming it, and nothing is pushed."""
    bare = bare_repo(tmp_path)
    marker = tmp_path / "escaped"  # outside the workspace and the sandbox: only code outside can write it
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    script = _script(
        [
            ("write_file", {"path": "plant.py", "content": NESTED_PLANT.replace("{marker}", str(marker))}),
            ("run_command", {"cmd": "python3 plant.py"}),
            ("git_commit", {"message": "agent work"}),
            ("git_status", {}),
            ("git_diff", {}),
        ]
    )
    cfg = _planting_cfg(script, run_id, bare)
    r = await start_runner(tmp_path, nats_url, cfg, secrets=SECRETS)
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, run_id)
    assert (r.workspace / "vendor" / "lib" / ".git").is_dir(), r.log()  # the plant ran, in the sandbox
    assert not marker.exists()  # the nested repository's filter never ran outside the sandbox
    ran = changes(events, "command-run")
    assert ran and ran[0]["exitCode"] == 0, ran
    refused = changes(events, "refused")
    assert [(c["tool"], c["reason"]) for c in refused] == [
        ("git_commit", "nested-git"),
        ("git_status", "nested-git"),
        ("git_diff", "nested-git"),
        ("commit", "nested-git"),  # the runner's own final commit
    ], refused
    end = final_status(events)
    assert end["status"] == "failed" and "vendor/lib/.git" in end["reason"], end
    assert git(bare, "for-each-ref", "--format=%(refname)", "refs/heads").split() == ["refs/heads/main"]
    _assert_nothing_leaked(bare, r, events)


FIFO_PLANT = """import os
os.makedirs("docs")
os.mkfifo("docs/.gitignore")
open("work.txt", "w").write("work\\n")
"""


async def test_a_fifo_where_git_opens_a_file_by_name_stalls_neither_the_tools_nor_the_runner(
    js, nats_url, tmp_path
) -> None:
    """git opens every `.gitignore` (and `.gitattributes`, `.mailmap`, ...) it meets by name, and the open
    of a FIFO waits for a writer: a command planting one made every git tool wait out its 60 s timeout,
    and the runner's own `git status` before its final commit (which has none) wait for ever. The git
    tools and the final commit now refuse, naming it; the run ends."""
    bare = bare_repo(tmp_path)
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    script = _script(
        [
            ("write_file", {"path": "plant.py", "content": FIFO_PLANT}),
            ("run_command", {"cmd": "python3 plant.py"}),
            ("git_status", {}),
            ("git_commit", {"message": "agent work"}),
        ]
    )
    cfg = _planting_cfg(script, run_id, bare)
    r = await start_runner(tmp_path, nats_url, cfg, secrets=SECRETS)
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, run_id)
    refused = changes(events, "refused")
    assert [(c["tool"], c["reason"]) for c in refused] == [
        ("git_status", "special-file"),
        ("git_commit", "special-file"),
        ("commit", "special-file"),  # the runner's own final commit
    ], refused
    end = final_status(events)
    assert end["status"] == "failed" and "docs/.gitignore" in end["reason"], end
    assert git(bare, "for-each-ref", "--format=%(refname)", "refs/heads").split() == ["refs/heads/main"]

"""Hostile tool calls: each one must be refused with a clear reason, recorded as a RefusedChange
(in the session, the state file and the event stream, with the ledger intact), and must leave
every byte outside the state directory — the sentinel directory and the workspace — unchanged."""

import asyncio
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nexus.domain.agents import CommandPolicy, Permissions
from nexus.domain.sessions import ApprovalChange, RefusedChange

ESCAPE_MARKER = Path("/tmp/nexus-hypervisor-pwned")


def _link(name: str, target: str) -> Callable[[Any], None]:
    def setup(box: Any) -> None:
        os.symlink(target.format(ws=box.ws, sentinel=box.sentinel), box.ws / name)

    return setup


def _fifo(box: Any) -> None:
    os.mkfifo(box.ws / "fifo")


def _socket(box: Any) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(box.ws / "sock"))  # the socket file stays, a socket still, after its socket is closed


def _device(box: Any) -> None:
    try:
        os.mknod(box.ws / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("cannot create device nodes here")


def _hardlink(box: Any) -> None:
    os.link(box.sentinel / "secret.txt", box.ws / "hard")


def _planted_repository(box: Any) -> None:
    """What an agent can leave at the workspace's root without naming .git (`gzip -d -S x .gitx`): a pointer
    to a git directory of its own making, whose config the agent wrote."""
    store = box.ws / "store"
    (store / "objects").mkdir(parents=True)
    (store / "refs").mkdir()
    (store / "HEAD").write_text("ref: refs/heads/main\n")
    (store / "config").write_text(f'[filter "x"]\n\tclean = "touch {box.sentinel}/filter-ran; cat"\n')
    (box.ws / ".git").write_text("gitdir: store\n")


@dataclass
class Case:
    id: str
    tool: str
    args: dict[str, Any]
    reason: str
    setup: Callable[[Any], None] | None = None
    permissions: Permissions | None = None
    approver: str | None = None  # "reject" | "expire"


def _patch(old: str, new: str, body: str = "@@ -1 +1 @@\n-sentinel: must never change or leak\n+owned\n") -> str:
    return f"--- {old}\n+++ {new}\n{body}"


DENY_RM = Permissions(commands=CommandPolicy(deny=["rm *"]))
ALLOW_ONLY_STATUS = Permissions(commands=CommandPolicy(allow=["git status*"], default="deny"))
ASK_COMMANDS = Permissions(commands=CommandPolicy(allow=["git status*"]), ask=["command"])

SURROGATE = "\ud800"  # valid in JSON ("\\ud800"), so a model can send it; no UTF-8 text holds it
TEXT_CASES = [
    # --- text that is no text: a lone surrogate anywhere, a NUL where it would become an argument --
    Case("surrogate-command", "run_command", {"cmd": f"echo {SURROGATE}"}, "invalid-arguments"),
    Case("surrogate-path", "write_file", {"path": f"s{SURROGATE}.txt", "content": "x"}, "invalid-arguments"),
    Case("surrogate-content", "write_file", {"path": "ok.txt", "content": SURROGATE}, "invalid-arguments"),
    Case("surrogate-edit", "edit_file", {"path": "README.md", "old": "hello", "new": SURROGATE}, "invalid-arguments"),
    Case("surrogate-patch", "apply_patch", {"patch": SURROGATE}, "invalid-arguments"),
    Case("surrogate-search", "search_text", {"pattern": SURROGATE}, "invalid-arguments"),
    Case("surrogate-list", "list_dir", {"path": SURROGATE}, "invalid-arguments"),
    Case("surrogate-note", "note", {"message": SURROGATE}, "invalid-arguments"),
    Case("surrogate-commit", "git_commit", {"message": SURROGATE}, "invalid-arguments"),
    Case("surrogate-child-file", "spawn_child", {"title": "t", "target_files": [SURROGATE]}, "invalid-arguments"),
    Case("nul-commit-message", "git_commit", {"message": "m\x00x"}, "invalid-arguments"),
    Case("nul-search-pattern", "search_text", {"pattern": "a\x00"}, "invalid-arguments"),
    # --- git reading a repository the agent planted (its config: filters, drivers) ------------
    Case(
        "git-planted-repository",
        "run_command",
        {"cmd": "git status"},
        "git-internals",
        _planted_repository,
        ALLOW_ONLY_STATUS,
    ),
]

CASES = [
    *TEXT_CASES,
    # --- paths: absolute, '..', special filesystems ---------------------------------------
    Case("read-abs-etc-passwd", "read_file", {"path": "/etc/passwd"}, "absolute-path"),
    Case("read-abs-sentinel", "read_file", {"path": "{sentinel}/secret.txt"}, "absolute-path"),
    Case("read-dotdot", "read_file", {"path": "../sentinel/secret.txt"}, "path-escape"),
    Case("read-inner-dotdot", "read_file", {"path": "src/../../sentinel/secret.txt"}, "path-escape"),
    Case("read-proc-environ-abs", "read_file", {"path": "/proc/self/environ"}, "absolute-path"),
    Case(
        "read-proc-via-link", "read_file", {"path": "proc/environ"}, "special-filesystem", _link("proc", "/proc/self")
    ),
    Case("read-dev-zero-via-link", "read_file", {"path": "zero"}, "special-filesystem", _link("zero", "/dev/zero")),
    Case("read-nul-byte", "read_file", {"path": "README.md\x00.txt"}, "invalid-path"),
    Case("write-newline-in-name", "write_file", {"path": "a\nb.txt", "content": "x"}, "invalid-path"),
    Case("write-escape-in-name", "write_file", {"path": "x\x1b[2J.txt", "content": "x"}, "invalid-path"),
    Case("read-injection-in-path", "read_file", {"path": "README.md; rm -rf /"}, "not-found"),
    # --- symlinks --------------------------------------------------------------------------
    Case(
        "read-symlink-out",
        "read_file",
        {"path": "link_out"},
        "outside-workspace",
        _link("link_out", "{sentinel}/secret.txt"),
    ),
    Case(
        "read-relative-symlink-out",
        "read_file",
        {"path": "rel_out"},
        "outside-workspace",
        _link("rel_out", "../sentinel/secret.txt"),
    ),
    Case(
        "read-symlinked-parent",
        "read_file",
        {"path": "linkdir/secret.txt"},
        "outside-workspace",
        _link("linkdir", "{sentinel}"),
    ),
    Case(
        "write-symlink-out",
        "write_file",
        {"path": "link_out", "content": "owned"},
        "outside-workspace",
        _link("link_out", "{sentinel}/secret.txt"),
    ),
    Case(
        "write-symlinked-parent",
        "write_file",
        {"path": "linkdir/pwned", "content": "x"},
        "outside-workspace",
        _link("linkdir", "{sentinel}"),
    ),
    Case(
        "write-dangling-link-out",
        "write_file",
        {"path": "dangling", "content": "x"},
        "outside-workspace",
        _link("dangling", "{sentinel}/created-through-link"),
    ),
    Case(
        "write-through-inside-symlink",
        "write_file",
        {"path": "link_in", "content": "x"},
        "symlink",
        _link("link_in", "README.md"),
    ),
    Case(
        "write-dangling-inside-symlink",
        "write_file",
        {"path": "dangling_in", "content": "x"},
        "symlink",
        _link("dangling_in", "not-yet.txt"),
    ),
    Case(
        "edit-symlink-out",
        "edit_file",
        {"path": "link_out", "old": "sentinel", "new": "owned"},
        "outside-workspace",
        _link("link_out", "{sentinel}/secret.txt"),
    ),
    Case("list-symlinked-dir", "list_dir", {"path": "linkdir"}, "outside-workspace", _link("linkdir", "{sentinel}")),
    Case(
        "search-symlinked-dir",
        "search_text",
        {"pattern": "sentinel", "path": "linkdir"},
        "outside-workspace",
        _link("linkdir", "{sentinel}"),
    ),
    # --- special files and hard links ------------------------------------------------------
    Case("read-fifo", "read_file", {"path": "fifo"}, "special-file", _fifo),
    Case("write-fifo", "write_file", {"path": "fifo", "content": "x"}, "special-file", _fifo),
    Case("read-socket", "read_file", {"path": "sock"}, "special-file", _socket),
    Case("read-device-node", "read_file", {"path": "null"}, "special-file", _device),
    Case("read-hardlink-to-outside", "read_file", {"path": "hard"}, "hard-link", _hardlink),
    # --- writes: absolute, '..', .git, size ------------------------------------------------
    Case("write-abs-sentinel", "write_file", {"path": "{sentinel}/pwned", "content": "x"}, "absolute-path"),
    Case("write-abs-tmp", "write_file", {"path": str(ESCAPE_MARKER), "content": "x"}, "absolute-path"),
    Case("write-dotdot", "write_file", {"path": "../sentinel/pwned", "content": "x"}, "path-escape"),
    Case("write-workspace-root", "write_file", {"path": ".", "content": "x"}, "invalid-path"),
    Case(
        "write-proc-via-link",
        "write_file",
        {"path": "proc/attr/current", "content": "x"},
        "special-filesystem",
        _link("proc", "/proc/self"),
    ),
    Case(
        "write-git-hook",
        "write_file",
        {"path": ".git/hooks/pre-commit", "content": "#!/bin/sh\ntouch /tmp/x\n"},
        "git-internals",
    ),
    Case(
        "write-git-config",
        "write_file",
        {"path": ".git/config", "content": "[core]\n\thooksPath = ../evil\n"},
        "git-internals",
    ),
    Case(
        "write-git-casefolded", "write_file", {"path": "src/.GIT/hooks/post-checkout", "content": "x"}, "git-internals"
    ),
    Case(
        "write-git-via-symlink",
        "write_file",
        {"path": "gitlink/hooks/pre-commit", "content": "x"},
        "git-internals",
        _link("gitlink", ".git"),
    ),
    Case(
        "edit-git-config",
        "edit_file",
        {"path": ".git/config", "old": "[core]", "new": "[core]\n\tfsmonitor = ./evil"},
        "git-internals",
    ),
    Case("write-huge-file", "write_file", {"path": "big.bin", "content": "x" * (9 << 20)}, "too-large"),
    # --- listing and searching outside -----------------------------------------------------
    Case("list-dotdot", "list_dir", {"path": ".."}, "path-escape"),
    Case("list-abs-root", "list_dir", {"path": "/"}, "absolute-path"),
    Case("search-dotdot", "search_text", {"pattern": "sentinel", "path": "../sentinel"}, "path-escape"),
    # --- patches -----------------------------------------------------------------------------
    Case(
        "patch-dotdot",
        "apply_patch",
        {"patch": _patch("a/../sentinel/secret.txt", "b/../sentinel/secret.txt")},
        "path-escape",
    ),
    # git reads "--- /abs/x" with its -p1 rule as the relative "abs/x": inside the workspace, and absent.
    Case(
        "patch-abs", "apply_patch", {"patch": _patch("{sentinel}/secret.txt", "{sentinel}/secret.txt")}, "patch-failed"
    ),
    Case(
        "patch-git-hook",
        "apply_patch",
        {
            "patch": "diff --git a/.git/hooks/post-commit b/.git/hooks/post-commit\nnew file mode 100755\n--- /dev/null\n+++ b/.git/hooks/post-commit\n@@ -0,0 +1 @@\n+touch /tmp/x\n"
        },
        "git-internals",
    ),
    Case(
        "patch-creates-symlink",
        "apply_patch",
        {
            "patch": "diff --git a/esc b/esc\nnew file mode 120000\n--- /dev/null\n+++ b/esc\n@@ -0,0 +1 @@\n+/\n\\ No newline at end of file\n"
        },
        "symlink",
    ),
    Case(
        "patch-through-symlinked-dir",
        "apply_patch",
        {"patch": _patch("a/linkdir/secret.txt", "b/linkdir/secret.txt")},
        "outside-workspace",
        _link("linkdir", "{sentinel}"),
    ),
    # --- commands: arguments pointing out, shells, injection ------------------------------------
    Case("cmd-rm-dotdot", "run_command", {"cmd": "rm -rf ../sentinel"}, "path-outside-workspace"),
    Case("cmd-rm-abs", "run_command", {"cmd": "rm -rf {sentinel}"}, "path-outside-workspace"),
    Case("cmd-cat-proc-environ", "run_command", {"cmd": "cat /proc/self/environ"}, "path-outside-workspace"),
    Case("cmd-tilde", "run_command", {"cmd": "cat ~/.ssh/id_rsa"}, "path-outside-workspace"),
    Case("cmd-glued-short-option", "run_command", {"cmd": "git -C{sentinel} status"}, "path-outside-workspace"),
    Case("cmd-option-equals", "run_command", {"cmd": "git --git-dir={sentinel}/.git status"}, "path-outside-workspace"),
    Case("cmd-program-outside", "run_command", {"cmd": "{sentinel}/evil.sh"}, "path-outside-workspace"),
    Case("cmd-sh-c", "run_command", {"cmd": "sh -c 'rm -rf ../sentinel'"}, "shell-not-allowed"),
    Case("cmd-bash-c", "run_command", {"cmd": "bash -c 'cat /etc/passwd'"}, "shell-not-allowed"),
    Case("cmd-abs-shell", "run_command", {"cmd": "/bin/sh -c id"}, "shell-not-allowed"),
    Case("cmd-shell-behind-env", "run_command", {"cmd": "env LANG=C sh -c id"}, "shell-not-allowed"),
    Case("cmd-shell-behind-xargs", "run_command", {"cmd": "xargs -a README.md bash"}, "shell-not-allowed"),
    Case("cmd-dollar-paren-as-program", "run_command", {"cmd": "$(rm -rf README.md)"}, "command-not-found"),
    Case("cmd-backtick-as-program", "run_command", {"cmd": "`touch pwned`"}, "command-not-found"),
    Case("cmd-unbalanced-quote", "run_command", {"cmd": "echo 'unterminated"}, "invalid-command"),
    Case("cmd-unknown-secret", "run_command", {"cmd": "X=${secret:NOT_A_SECRET} printenv X"}, "unknown-secret"),
    Case("cmd-secret-in-argv", "run_command", {"cmd": "echo ${secret:API_KEY}"}, "secret-in-argv"),
    Case("cmd-git-push", "run_command", {"cmd": "git push origin main"}, "not-permitted"),
    Case("cmd-git-merge-not-allowed", "run_command", {"cmd": "git -c x=y merge other"}, "not-permitted"),
    # --- command policy and approvals ------------------------------------------------------------
    Case("cmd-policy-deny", "run_command", {"cmd": "rm -rf README.md"}, "policy-deny", permissions=DENY_RM),
    Case(
        "cmd-policy-deny-by-abs-program",
        "run_command",
        {"cmd": "/bin/rm -rf README.md"},
        "policy-deny",
        permissions=DENY_RM,
    ),
    Case(
        "cmd-policy-deny-extra-spaces",
        "run_command",
        {"cmd": "  rm   -rf   README.md"},
        "policy-deny",
        permissions=DENY_RM,
    ),
    Case(
        "cmd-policy-default-deny", "run_command", {"cmd": "touch pwned"}, "policy-deny", permissions=ALLOW_ONLY_STATUS
    ),
    Case(
        "cmd-ask-without-approver", "run_command", {"cmd": "touch pwned"}, "approval-required", permissions=ASK_COMMANDS
    ),
    Case(
        "cmd-ask-rejected",
        "run_command",
        {"cmd": "touch pwned"},
        "approval-rejected",
        permissions=ASK_COMMANDS,
        approver="reject",
    ),
    Case(
        "cmd-ask-expired",
        "run_command",
        {"cmd": "touch pwned"},
        "approval-expired",
        permissions=ASK_COMMANDS,
        approver="expire",
    ),
    Case(
        "write-ask-glob-rejected",
        "write_file",
        {"path": "deploy/prod.yaml", "content": "x"},
        "approval-rejected",
        permissions=Permissions(ask=["write:deploy/*"]),
        approver="reject",
    ),
    Case(
        "write-ask-glob-without-approver",
        "write_file",
        {"path": "deploy/prod.yaml", "content": "x"},
        "approval-required",
        permissions=Permissions(ask=["write:deploy/*"]),
    ),
    # --- the tool surface itself -----------------------------------------------------------------
    Case("unknown-tool", "exec_python", {"code": "import os"}, "unknown-tool"),
    Case("wrong-argument-type", "read_file", {"path": 5}, "invalid-arguments"),
    Case("unexpected-argument", "read_file", {"path": "README.md", "follow_symlinks": True}, "invalid-arguments"),
    Case("negative-timeout", "run_command", {"cmd": "true", "timeout_s": -1}, "invalid-arguments"),
    Case("spawn-without-spawner", "spawn_child", {"title": "child"}, "not-permitted"),
    Case(
        "commit-not-permitted",
        "git_commit",
        {"message": "x"},
        "not-permitted",
        permissions=Permissions(can_commit=False),
    ),
    Case("approval-without-approver", "request_approval", {"action": "merge", "detail": "please"}, "approval-required"),
]


def _fill(value: Any, box: Any) -> Any:
    if isinstance(value, str):
        return value.replace("{sentinel}", str(box.sentinel)).replace("{ws}", str(box.ws))
    return value


def _decide(decision: str) -> Any:
    async def approver(action: str, detail: str) -> bool:
        if decision == "expire":
            raise TimeoutError
        return False

    return approver


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_hostile_call_is_refused_and_recorded(case: Case, sandbox: Any) -> None:
    if case.setup:
        case.setup(sandbox)
    approver = _decide(case.approver) if case.approver else None
    hv = sandbox.make(permissions=case.permissions, approver=approver)
    before = sandbox.snapshot()
    recorded = len(sandbox.session.changes)

    result = await asyncio.wait_for(hv.call(case.tool, {k: _fill(v, sandbox) for k, v in case.args.items()}), 30)

    assert not result.ok
    assert result.error.startswith(f"refused ({case.reason})"), result.error
    new = sandbox.session.changes[recorded:]
    assert isinstance(new[-1], RefusedChange)
    assert (new[-1].tool, new[-1].reason) == (case.tool, case.reason)
    if case.approver:
        decisions = [c.decision for c in new if isinstance(c, ApprovalChange)]
        assert decisions == ["requested", "rejected" if case.approver == "reject" else "expired"]
    sandbox.assert_recorded()
    assert sandbox.snapshot() == before
    assert sandbox.sentinel_intact()
    assert not ESCAPE_MARKER.exists()
    assert sandbox.SECRET not in result.error and sandbox.RUNNER_SECRET not in result.error


def test_there_are_at_least_forty_hostile_calls() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)

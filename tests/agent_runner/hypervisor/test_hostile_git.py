"""Hostile calls against git, patches, search and secrets: each is refused with a clear reason and
recorded (session, state file, events, ledger intact), and nothing outside the state directory
changes. Plus the attacks that are not refusals: planted git config, filters and fsmonitor never
run; search is no oracle over a secret; a directory swapped for a symlink mid-apply changes nothing."""

import asyncio
import gzip
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nexus.agent_runner.hypervisor import Hypervisor, patches, paths
from nexus.domain.agents import CommandPolicy, Permissions
from nexus.domain.sessions import RefusedChange
from tests.agent_runner.hypervisor.conftest import SECRET

MARKERS = ("filter-ran", "smudge-ran", "textconv-ran", "fsmonitor-ran", "alias-ran", "hook-ran", "diff-ran")


@dataclass
class Case:
    id: str
    tool: str
    args: dict[str, Any]
    reasons: tuple[str, ...]
    setup: Callable[[Any], None] | None = None  # before the hypervisor exists
    tamper: Callable[[Any], None] | None = None  # after it sealed its git directory


def _new(path: str, mode: str, body: str = "+/etc/passwd\n\\ No newline at end of file\n") -> str:
    return f"diff --git a/{path} b/{path}\nnew file mode {mode}\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n{body}"


def _mode_change(path: str, mode: str) -> str:
    return f"diff --git a/{path} b/{path}\nold mode 100644\nnew mode {mode}\n"


def _move(kind: str, src: str, dst: str) -> str:
    return f"diff --git a/{src} b/{dst}\nsimilarity index 100%\n{kind} from {src}\n{kind} to {dst}\n"


def _modify(path: str) -> str:
    return f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-sentinel: must never change or leak\n+owned\n"


def _link(name: str, target: str) -> Callable[[Any], None]:
    def setup(box: Any) -> None:
        os.symlink(target.format(ws=box.ws, sentinel=box.sentinel), box.ws / name)

    return setup


def _file(name: str) -> Callable[[Any], None]:
    def setup(box: Any) -> None:
        path = box.ws / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")

    return setup


def _append(name: str, text: str) -> Callable[[Any], None]:
    def tamper(box: Any) -> None:
        path = box.root / "gitdir" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(text.replace("{sentinel}", str(box.sentinel)))

    return tamper


GITLINK = "+Subproject commit 0123456789abcdef0123456789abcdef01234567\n"
SYMLINK = ("symlink",)
NOT_REGULAR = ("symlink", "not-regular-file", "invalid-patch", "patch-failed")
GIT_PATH = ("git-internals", "invalid-patch", "patch-failed")
FORGED = ("forged-trailer",)

CASES = [
    # --- symlinks and gitlinks in any spelling ----------------------------------------------
    Case("patch-symlink", "apply_patch", {"patch": _new("esc", "120000")}, SYMLINK),
    Case("patch-symlink-two-spaces", "apply_patch", {"patch": _new("esc", " 120000")}, NOT_REGULAR),
    Case("patch-symlink-leading-zero", "apply_patch", {"patch": _new("esc", "0120000")}, NOT_REGULAR),
    Case("patch-symlink-many-zeros", "apply_patch", {"patch": _new("esc", "000000120000")}, NOT_REGULAR),
    Case("patch-symlink-trailing-space", "apply_patch", {"patch": _new("esc", "120000 ")}, NOT_REGULAR),
    Case("patch-symlink-tab", "apply_patch", {"patch": _new("esc", "\t120000")}, NOT_REGULAR),
    Case("patch-symlink-mode-change", "apply_patch", {"patch": _mode_change("README.md", "120000")}, NOT_REGULAR),
    Case(
        "patch-symlink-mode-change-zeros", "apply_patch", {"patch": _mode_change("README.md", "  0120000")}, NOT_REGULAR
    ),
    Case(
        "patch-symlink-index-line",
        "apply_patch",
        {
            "patch": "diff --git a/esc b/esc\nindex 0000000..1111111 120000\n--- /dev/null\n+++ b/esc\n@@ -0,0 +1 @@\n+/etc\n"
        },
        NOT_REGULAR,
    ),
    Case("patch-gitlink", "apply_patch", {"patch": _new("sub", "160000", GITLINK)}, NOT_REGULAR),
    Case("patch-gitlink-zeros", "apply_patch", {"patch": _new("sub", "0160000", GITLINK)}, NOT_REGULAR),
    Case("patch-gitlink-mode-change", "apply_patch", {"patch": _mode_change("README.md", "160000")}, NOT_REGULAR),
    Case("patch-directory-mode", "apply_patch", {"patch": _new("d", "040000")}, NOT_REGULAR),
    Case("patch-odd-mode", "apply_patch", {"patch": _new("odd", "100777")}, NOT_REGULAR),
    # --- paths into .git, outside, through symlinks ------------------------------------------
    Case("patch-rename-into-git", "apply_patch", {"patch": _move("rename", "README.md", ".git/config")}, GIT_PATH),
    Case(
        "patch-copy-into-git-hooks",
        "apply_patch",
        {"patch": _move("copy", "README.md", ".git/hooks/post-checkout")},
        GIT_PATH,
    ),
    Case("patch-upper-case-git", "apply_patch", {"patch": _new(".GIT/config", "100644", "+[core]\n")}, GIT_PATH),
    Case("patch-nested-git", "apply_patch", {"patch": _new("sub/.git/config", "100644", "+[core]\n")}, GIT_PATH),
    Case("patch-git-file", "apply_patch", {"patch": _new(".git", "100644", "+gitdir: /tmp\n")}, GIT_PATH),
    Case(
        "patch-rename-outside",
        "apply_patch",
        {"patch": _move("rename", "README.md", "../escaped")},
        ("invalid-patch", "path-escape"),
    ),
    Case(
        "patch-create-through-symlinked-dir",
        "apply_patch",
        {"patch": _new("linkdir/new.txt", "100644", "+x\n")},
        ("outside-workspace", "symlink"),
        _link("linkdir", "{sentinel}/dir"),
    ),
    Case(
        "patch-modify-through-symlinked-dir",
        "apply_patch",
        {"patch": _modify("linkdir/secret.txt")},
        ("outside-workspace", "symlink"),
        _link("linkdir", "{sentinel}"),
    ),
    Case(
        "patch-delete-through-symlinked-dir",
        "apply_patch",
        {
            "patch": "diff --git a/linkdir/secret.txt b/linkdir/secret.txt\ndeleted file mode 100644\n--- a/linkdir/secret.txt\n+++ /dev/null\n"
            "@@ -1 +0,0 @@\n-sentinel: must never change or leak\n"
        },
        ("outside-workspace", "symlink"),
        _link("linkdir", "{sentinel}"),
    ),
    Case(
        "patch-through-inside-symlinked-dir",
        "apply_patch",
        {"patch": _new("srclink/x.py", "100644", "+x\n")},
        SYMLINK,
        _link("srclink", "src"),
    ),
    Case(
        "patch-modify-a-symlink",
        "apply_patch",
        {"patch": _modify("lnk")},
        ("outside-workspace", "symlink", "patch-failed"),
        _link("lnk", "{sentinel}/secret.txt"),
    ),
    Case(
        "patch-secret-in-path",
        "apply_patch",
        {"patch": _new(f"leak-{SECRET}.txt", "100644", "+x\n")},
        ("secret-in-path",),
    ),
    # --- a secret's value in a path --------------------------------------------------------
    Case("write-secret-path", "write_file", {"path": SECRET, "content": "x"}, ("secret-in-path",)),
    Case("write-secret-dir", "write_file", {"path": f"d/{SECRET}/x.txt", "content": "x"}, ("secret-in-path",)),
    Case("write-secret-suffix", "write_file", {"path": f"notes-{SECRET}.md", "content": "x"}, ("secret-in-path",)),
    Case("read-secret-path", "read_file", {"path": SECRET}, ("secret-in-path",)),
    Case("edit-secret-path", "edit_file", {"path": SECRET, "old": "a", "new": "b"}, ("secret-in-path",)),
    Case("list-secret-path", "list_dir", {"path": SECRET}, ("secret-in-path",)),
    Case("search-secret-path", "search_text", {"pattern": "x", "path": SECRET}, ("secret-in-path",)),
    Case("commit-secret-file-name", "git_commit", {"message": "add"}, ("secret-in-path",), _file(SECRET)),
    Case("commit-secret-dir-name", "git_commit", {"message": "add"}, ("secret-in-path",), _file(f"{SECRET}/inner.txt")),
    # --- provenance: Nexus-* trailers are the runner's ----------------------------------------
    Case("commit-forged-ledger", "git_commit", {"message": "work\n\nNexus-Ledger: 00forged"}, FORGED, _file("a.txt")),
    Case("commit-forged-lower-case", "git_commit", {"message": "work\n\nnexus-run: run_fake"}, FORGED, _file("a.txt")),
    Case(
        "commit-forged-indented",
        "git_commit",
        {"message": "work\n\n   Nexus-Session : ses_fake"},
        FORGED,
        _file("a.txt"),
    ),
    Case("commit-forged-first-line", "git_commit", {"message": "Nexus-Agent: me@1"}, FORGED, _file("a.txt")),
    Case("commit-forged-middle", "git_commit", {"message": "a\nNexus-Ledger: x\nb"}, FORGED, _file("a.txt")),
    Case("commit-forged-custom-key", "git_commit", {"message": "a\n\nNEXUS-APPROVED-BY: lead"}, FORGED, _file("a.txt")),
    # --- the private git directory changed behind the hypervisor's back ----------------------
    Case(
        "status-after-config-tamper",
        "git_status",
        {},
        ("git-tampered",),
        tamper=_append("config", '[core]\n\tfsmonitor = "touch {sentinel}/fsmonitor-ran; false"\n'),
    ),
    Case(
        "diff-after-filter-tamper",
        "git_diff",
        {},
        ("git-tampered",),
        tamper=_append("config", '[filter "evil"]\n\tclean = touch {sentinel}/filter-ran\n'),
    ),
    Case(
        "log-after-attributes-tamper",
        "git_log",
        {},
        ("git-tampered",),
        tamper=_append("info/attributes", "* filter=evil\n"),
    ),
    Case(
        "commit-after-alternates-tamper",
        "git_commit",
        {"message": "x"},
        ("git-tampered",),
        _file("a.txt"),
        _append("objects/info/alternates", "/tmp\n"),
    ),
    Case(
        "commit-after-worktree-config",
        "git_commit",
        {"message": "x"},
        ("git-tampered",),
        _file("a.txt"),
        _append("config.worktree", "[core]\n\thooksPath = /tmp\n"),
    ),
]


def _fill(value: Any, box: Any) -> Any:
    return value.replace("{sentinel}", str(box.sentinel)) if isinstance(value, str) else value


def _outside_state(snapshot: dict) -> dict:
    return {k: v for k, v in snapshot.items() if not k.startswith("gitdir")}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_hostile_git_call_is_refused_and_recorded(case: Case, sandbox: Any) -> None:
    if case.setup:
        case.setup(sandbox)
    hv = sandbox.make()
    if case.tamper:
        case.tamper(sandbox)
    before = _outside_state(sandbox.snapshot())
    recorded = len(sandbox.session.changes)

    result = await asyncio.wait_for(hv.call(case.tool, {k: _fill(v, sandbox) for k, v in case.args.items()}), 30)

    assert not result.ok
    assert any(result.error.startswith(f"refused ({reason})") for reason in case.reasons), result.error
    new = sandbox.session.changes[recorded:]
    assert isinstance(new[-1], RefusedChange) and new[-1].tool == case.tool and new[-1].reason in case.reasons
    sandbox.assert_recorded()
    assert _outside_state(sandbox.snapshot()) == before
    assert sandbox.sentinel_intact() and not any((sandbox.sentinel / m).exists() for m in MARKERS)
    assert not any(p.is_symlink() for p in sandbox.ws.rglob("*") if p.name not in ("linkdir", "srclink", "lnk"))
    assert SECRET not in result.error and SECRET not in str(new)


def test_there_are_enough_hostile_git_calls() -> None:
    assert len(CASES) >= 45 and len({c.id for c in CASES}) == len(CASES)


# --- attacks that are not refusals: nothing they plant ever runs ---------------------------------


def _plant_drivers(box: Any) -> None:
    """Everything an agent's command could write in the workspace to steer git: a .git directory with a
    config (fsmonitor, filters, textconv, aliases, hooks path), a .gitconfig (HOME used to be the
    workspace), and .gitattributes naming the drivers."""
    s = box.sentinel
    config = (
        f'[core]\n\tfsmonitor = "touch {s}/fsmonitor-ran; false"\n\thooksPath = {box.ws}/hooks\n'
        f'[filter "evil"]\n\tclean = "touch {s}/filter-ran; cat"\n\tsmudge = "touch {s}/smudge-ran; cat"\n\trequired = true\n'
        f'[diff "evil"]\n\ttextconv = "touch {s}/textconv-ran; cat"\n\tcommand = "touch {s}/diff-ran"\n'
        f'[alias]\n\tstatus = "!touch {s}/alias-ran"\n\tdiff = "!touch {s}/alias-ran"\n\tcommit = "!touch {s}/alias-ran"\n'
    )
    (box.ws / ".git").mkdir()
    (box.ws / ".git" / "config").write_text(config)
    (box.ws / ".gitconfig").write_text(config)
    (box.ws / ".config" / "git").mkdir(parents=True)
    (box.ws / ".config" / "git" / "config").write_text(config)
    (box.ws / "hooks").mkdir()
    for hook in ("pre-commit", "commit-msg", "post-commit", "post-index-change"):
        (box.ws / "hooks" / hook).write_text(f"#!/bin/sh\ntouch {s}/hook-ran\n")
        (box.ws / "hooks" / hook).chmod(0o755)
    (box.ws / ".gitattributes").write_text("* filter=evil diff=evil merge=evil\n")


async def test_planted_config_filters_fsmonitor_and_hooks_never_run(sandbox: Any, git_cmd: Any) -> None:
    _plant_drivers(sandbox)
    hv = sandbox.make()
    (sandbox.ws / "README.md").write_text("# demo\nchanged\n")
    for tool, args in (
        ("git_status", {}),
        ("git_diff", {}),
        ("git_log", {}),
        ("git_commit", {"message": "with drivers planted"}),
        ("git_diff", {}),
        ("git_status", {}),
        ("git_log", {}),
    ):
        result = await hv.call(tool, args)
        assert result.ok, (tool, result.error)
    assert not any((sandbox.sentinel / m).exists() for m in MARKERS), sorted(p.name for p in sandbox.sentinel.iterdir())
    committed = git_cmd(sandbox.ws, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert ".gitattributes" in committed and not any(p.startswith(".git/") for p in committed)
    # The blob is what the work tree held: no clean filter ran on the way in.
    assert git_cmd(sandbox.ws, "show", "HEAD:README.md") == "# demo\nchanged\n"


async def test_a_parent_swapped_for_a_symlink_during_apply_writes_nothing_outside(
    sandbox: Any, monkeypatch: Any
) -> None:
    hv = sandbox.make()
    copy_in = patches._copy_in

    def swap_then_copy(plan: Any, ws: Any) -> None:
        copy_in(plan, ws)
        os.rename(sandbox.ws / "src", sandbox.ws / "src-real")  # after the checks, before the write-back
        os.symlink(sandbox.sentinel / "dir", sandbox.ws / "src")

    monkeypatch.setattr(patches, "_copy_in", swap_then_copy)
    patch = "diff --git a/src/app.py b/src/app.py\n--- a/src/app.py\n+++ b/src/app.py\n@@ -1 +1 @@\n-print('hello')\n+owned\n"
    result = await hv.call("apply_patch", {"patch": patch + _new("src/new.py", "100644", "+owned\n")})
    assert not result.ok and result.error.startswith("refused (not-a-directory)"), result.error
    assert sorted(p.name for p in (sandbox.sentinel / "dir").iterdir()) == ["inner.txt"]
    assert sandbox.sentinel_intact() and (sandbox.ws / "src-real" / "app.py").read_text() == "print('hello')\n"


async def test_apply_patch_keeps_modes_and_applies_renames(sandbox: Any) -> None:
    hv = sandbox.make()
    patch = _move("rename", "README.md", "docs/README.md") + _new("run.sh", "100755", "+echo hi\n")
    result = await hv.call("apply_patch", {"patch": patch})
    assert result.ok, result.error
    assert not (sandbox.ws / "README.md").exists() and (sandbox.ws / "docs" / "README.md").read_text().startswith(
        "# demo"
    )
    assert (
        os.stat(sandbox.ws / "run.sh").st_mode & 0o777 == 0o755 and (sandbox.ws / "run.sh").read_text() == "echo hi\n"
    )


# --- search is no oracle; masking comes before any cut -------------------------------------------

PROBES = [
    SECRET,
    SECRET[:6],
    SECRET[:10],
    SECRET[-8:],
    "s3cr3t",
    "^token = s3",
    "9f8e7d6c$",
    "s.cr.t-V",
    "[s]3cr3t",
    "Value-[0-9]f8e",
    "s3cr3t-Value-9f8e7d6c|nothing-else-matches",
]


@pytest.mark.parametrize("pattern", PROBES)
async def test_search_never_matches_a_secret_value(sandbox: Any, pattern: str) -> None:
    (sandbox.ws / "config.env").write_text(f"token = {SECRET}\n")
    hv = sandbox.make()
    result = await hv.call("search_text", {"pattern": pattern})
    assert result.ok and result.output == "no matches", result.output


async def test_search_shows_the_masked_view(sandbox: Any) -> None:
    (sandbox.ws / "config.env").write_text(f"token = {SECRET}\n" + "x" * 280 + SECRET + "\n")
    hv = sandbox.make()
    found = await hv.call("search_text", {"pattern": "token|xxxx"})
    assert found.output.splitlines()[0] == "config.env:1:token = ${secret:API_KEY}"
    long_line = found.output.splitlines()[1]
    assert len(long_line) == 300 and all(SECRET[:n] not in long_line for n in range(4, len(SECRET) + 1))
    # A file name holding the value is masked as well.
    (sandbox.ws / f"n-{SECRET}.txt").write_text("needle\n")
    named = await hv.call("search_text", {"pattern": "needle"})
    assert named.output == "n-${secret:API_KEY}.txt:1:needle"


async def test_errors_never_repr_a_secret(sandbox: Any) -> None:
    value = "back\\slash-Secret-31415"
    hv = Hypervisor(
        workspace=sandbox.ws,
        permissions=Permissions(commands=CommandPolicy(default="allow")),
        session=sandbox.session,
        state_file=sandbox.state_file,
        secrets={"BS": value},
        git_dir=sandbox.root / "gitdir",
    )
    # A secret as the program: the command policy refuses it before anything runs (secrets reach a
    # command only through its environment), and neither the error nor the ledger shows the value.
    result = await hv.call("run_command", {"cmd": "${secret:BS}"})
    assert not result.ok and result.error.startswith("refused (secret-in-argv)")
    change = sandbox.session.changes[-1]
    for text in (result.error, change.detail, Path(sandbox.state_file).read_text()):
        assert value not in text and value.replace("\\", "\\\\") not in text and "back\\\\" not in text


# --- a repository nested in the work tree: git would run its drivers outside the sandbox ----------


def _nested_git(box: Any, sub: str, *, separate: bool = False) -> None:
    """What a sandboxed command (an allowed interpreter, a test run) can do in the workspace: make a
    repository of its own in `sub`, whose config defines a clean filter that its .gitattributes uses,
    and leave a file in it changed, so a `git status` inside it must run the filter."""
    path = box.ws / sub
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    env = {k: v for k, v in env.items() if k not in ("GIT_DIR", "GIT_WORK_TREE")}

    def g(*args: str) -> None:
        subprocess.run(
            ["git", "-C", str(path), "-c", "user.name=x", "-c", "user.email=x@x", *args], env=env, check=True
        )

    subprocess.run(["mkdir", "-p", str(path)], check=True)  # Path.mkdir recurses once per missing parent
    init = ["init", "-q"] + ([f"--separate-git-dir={box.ws / 'store'}"] if separate else [])
    g(*init)
    (path / "f.txt").write_text("one\n")
    (path / ".gitattributes").write_text("* filter=evil\n")
    g("add", "-A")
    g("commit", "-q", "-m", "nested")
    g("config", "filter.evil.clean", f"touch {box.sentinel}/filter-ran; cat")
    (path / "f.txt").write_text("two\n")


def _tracked_gitlink(box: Any) -> None:
    """The repository the run was cloned from has a submodule at `lib` (an empty directory in the work tree)."""
    from tests.agent_runner.hypervisor.conftest import git

    git(box.ws, "update-index", "--add", "--cacheinfo", f"160000,{'1' * 40},lib")
    git(box.ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a submodule")
    (box.ws / "lib").mkdir()


def _clear_deep(box: Any) -> None:
    """A tree deeper than Python's recursion must go before pytest's own cleanup (shutil.rmtree) meets it."""
    if (box.ws / "d").exists():
        paths.remove_tree(box.ws / "d")


NESTED = {
    "nested-repository": lambda box: _nested_git(box, "sub"),
    "nested-gitfile": lambda box: _nested_git(box, "deep/sub", separate=True),
    "populated-submodule": lambda box: (_tracked_gitlink(box), _nested_git(box, "lib")),
    # Deeper than Python's recursion limit: the check keeps its own stack.
    "deep-nested-repository": lambda box: _nested_git(box, "d/" * 1200 + "sub"),
}


@pytest.mark.parametrize("plant", NESTED, ids=list(NESTED))
async def test_a_repository_nested_in_the_workspace_never_steers_git(sandbox: Any, plant: str) -> None:
    """A `.git` below the workspace's root makes git treat that directory as a repository of its own:
    `add -A` stages it as a gitlink, and from then on status, diff and add run `git status` inside it,
    with its config — filters, drivers — outside the sandbox. The git tools refuse while one exists."""
    try:
        hv = sandbox.make()
        NESTED[plant](sandbox)
        (sandbox.ws / "README.md").write_text("# demo\nchanged\n")
        for tool, args in (
            ("git_status", {}),
            ("git_commit", {"message": "with a nested repository"}),
            ("git_status", {}),
            ("git_diff", {}),
            ("git_commit", {"message": "again"}),
        ):
            result = await hv.call(tool, args)
            assert not result.ok and result.error.startswith("refused (nested-git)"), (tool, result)
            change = sandbox.session.changes[-1]
            assert isinstance(change, RefusedChange) and (change.tool, change.reason) == (tool, "nested-git")
        assert not (sandbox.sentinel / "filter-ran").exists()
        sandbox.assert_recorded()
        # git_log reads no work tree: it still answers.
        assert (await hv.call("git_log", {})).ok
    finally:
        _clear_deep(sandbox)


async def test_a_tree_deeper_than_any_recursion_is_searched_and_committed(sandbox: Any, git_cmd: Any) -> None:
    """A path 1,200 directories deep (write_file makes its parents): search, status and commit walk the
    tree without recursing on it — search leaves out what is past its depth and says so."""
    try:
        hv = sandbox.make()
        deep = "d/" * 1200 + "needle.txt"
        assert (await hv.call("write_file", {"path": deep, "content": "needle\n"})).ok
        assert (await hv.call("write_file", {"path": "d/top.txt", "content": "needle\n"})).ok
        found = await hv.call("search_text", {"pattern": "needle"})
        assert found.ok and found.output.startswith("d/top.txt:1:needle\n"), found
        assert "directories deep]" in found.output
        for tool, args in (("git_status", {}), ("git_commit", {"message": "deep"}), ("git_diff", {})):
            result = await hv.call(tool, args)
            assert result.ok, (tool, result.error)
        assert deep in git_cmd(sandbox.ws, "ls-tree", "-r", "--name-only", "HEAD").split()
        sandbox.assert_recorded()
    finally:
        _clear_deep(sandbox)


async def test_a_git_pointer_a_command_makes_without_naming_it_stops_the_git_tools(sandbox: Any) -> None:
    """No interpreter needed: `gzip -d -S x sub/.gitx` writes `sub/.git` (the name is the operand less the
    suffix, never in the command line), a pointer to a git directory the agent wrote as plain files. The
    command runs; the git tools then refuse while the pointer is there."""
    hv = sandbox.make()
    (sandbox.ws / "sub").mkdir()
    (sandbox.ws / "sub" / ".gitx").write_bytes(gzip.compress(b"gitdir: ../store\n"))
    ran = await hv.call("run_command", {"cmd": "gzip -d -S x sub/.gitx"})
    assert ran.ok and (sandbox.ws / "sub" / ".git").is_file(), ran
    for tool in ("git_status", "git_diff", "git_commit"):
        result = await hv.call(tool, {"message": "m"} if tool == "git_commit" else {})
        assert result.error.startswith("refused (nested-git)"), (tool, result)
    sandbox.assert_recorded()

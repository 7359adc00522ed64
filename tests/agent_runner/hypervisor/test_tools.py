"""The tools doing their job: what the model gets back, what the session records, what the state
file and the recorder see, and how approvals, child sessions and finishing behave."""

import hashlib
from typing import Any

import msgspec

from nexus.agent_runner.hypervisor import Hypervisor, ToolSpecJSON
from nexus.agent_runner.hypervisor.state import read_state
from nexus.domain.agents import TOOL_NAMES, CommandPolicy, Permissions
from nexus.domain.ledger import verify_chain
from nexus.domain.sessions import (
    ApprovalChange,
    ChildSessionChange,
    CommandRunChange,
    FileReadChange,
    FileWriteChange,
    GitCommitChange,
    NoteChange,
    RefusedChange,
)

ALL_TOOLS = [
    "read_file",
    "write_file",
    "edit_file",
    "apply_patch",
    "list_dir",
    "search_text",
    "run_command",
    "git_status",
    "git_diff",
    "git_log",
    "git_commit",
    "note",
    "request_approval",
    "spawn_child",
    "finish",
]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_write_read_edit_record_what_happened(sandbox: Any) -> None:
    hv = sandbox.hv
    assert (await hv.call("write_file", {"path": "pkg/mod.py", "content": "x = 1\ny = 2\n"})).ok
    read = await hv.call("read_file", {"path": "pkg/mod.py"})
    assert read.output == "x = 1\ny = 2\n"
    edit = await hv.call("edit_file", {"path": "pkg/mod.py", "old": "y = 2", "new": "y = 3"})
    assert edit.ok
    assert (sandbox.ws / "pkg" / "mod.py").read_text() == "x = 1\ny = 3\n"
    kinds = [type(c) for c in sandbox.session.changes]
    assert kinds == [FileWriteChange, FileReadChange, FileWriteChange]
    last = sandbox.session.changes[-1]
    assert (last.rel_path, last.bytes, last.sha256) == ("pkg/mod.py", 12, _sha(b"x = 1\ny = 3\n"))
    assert [c.seq for c in sandbox.session.changes] == [0, 1, 2]
    sandbox.assert_recorded()


async def test_write_keeps_the_file_mode(sandbox: Any) -> None:
    script = sandbox.ws / "run.sh"
    script.write_text("old\n")
    script.chmod(0o755)
    assert (await sandbox.hv.call("write_file", {"path": "run.sh", "content": "new\n"})).ok
    assert script.stat().st_mode & 0o777 == 0o755


async def test_edit_needs_exactly_one_match(sandbox: Any) -> None:
    (sandbox.ws / "twice.txt").write_text("a a\n")
    none = await sandbox.hv.call("edit_file", {"path": "twice.txt", "old": "b", "new": "c"})
    many = await sandbox.hv.call("edit_file", {"path": "twice.txt", "old": "a", "new": "c"})
    assert not none.ok and none.error.startswith("refused (no-match)")
    assert not many.ok and "occurs 2 times" in many.error
    assert [c.reason for c in sandbox.session.changes] == ["no-match", "ambiguous-match"]
    assert (sandbox.ws / "twice.txt").read_text() == "a a\n"


async def test_apply_patch_modifies_creates_and_deletes(sandbox: Any, git_cmd: Any) -> None:
    (sandbox.ws / "gone.txt").write_text("bye\n")
    git_cmd(sandbox.ws, "add", "gone.txt")
    patch = (
        "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
        "@@ -1,2 +1,2 @@\n # demo\n-hello world\n+hello patch\n"
        "diff --git a/new/file.txt b/new/file.txt\nnew file mode 100644\n--- /dev/null\n+++ b/new/file.txt\n"
        "@@ -0,0 +1 @@\n+fresh\n"
        "diff --git a/gone.txt b/gone.txt\ndeleted file mode 100644\n--- a/gone.txt\n+++ /dev/null\n"
        "@@ -1 +0,0 @@\n-bye\n"
    )
    result = await sandbox.hv.call("apply_patch", {"patch": patch})
    assert result.ok, result.error
    assert (sandbox.ws / "README.md").read_text() == "# demo\nhello patch\n"
    assert (sandbox.ws / "new" / "file.txt").read_text() == "fresh\n"
    assert not (sandbox.ws / "gone.txt").exists()
    writes = {c.rel_path: c for c in sandbox.session.changes if isinstance(c, FileWriteChange)}
    assert set(writes) == {"README.md", "new/file.txt", "gone.txt"}
    assert writes["gone.txt"].bytes == 0 and writes["new/file.txt"].sha256 == _sha(b"fresh\n")


async def test_apply_patch_that_does_not_apply_changes_nothing(sandbox: Any) -> None:
    before = sandbox.snapshot()
    patch = "--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-not there\n+x\n"
    result = await sandbox.hv.call("apply_patch", {"patch": patch})
    assert not result.ok and result.error.startswith("refused (patch-failed)")
    assert sandbox.snapshot() == before


async def test_list_and_search(sandbox: Any) -> None:
    listing = await sandbox.hv.call("list_dir", {"path": "src"})
    assert listing.output == "app.py"
    found = await sandbox.hv.call("search_text", {"pattern": "hel+o", "path": "."})
    assert found.output.splitlines() == ["README.md:2:hello world", "src/app.py:1:print('hello')"]
    nothing = await sandbox.hv.call("search_text", {"pattern": "zzz-none"})
    assert nothing.output == "no matches"
    bad = await sandbox.hv.call("search_text", {"pattern": "a{1"})
    assert bad.ok and bad.output == "no matches"  # an unterminated interval is a literal brace (POSIX ERE)
    broken = await sandbox.hv.call("search_text", {"pattern": "(unclosed"})
    assert not broken.ok and broken.error.startswith("refused (invalid-pattern)")


async def test_run_command_reports_exit_code_and_records_it(sandbox: Any) -> None:
    result = await sandbox.hv.call("run_command", {"cmd": "python3 -c 'import sys; print(\"out\"); sys.exit(3)'"})
    assert result.ok
    assert result.output == "out\n\n[exit code 3]"
    change = sandbox.session.changes[-1]
    assert isinstance(change, CommandRunChange) and change.exit_code == 3 and not change.output_truncated


async def test_allowed_shell_runs_when_the_policy_names_it(sandbox: Any) -> None:
    hv = sandbox.make(permissions=Permissions(commands=CommandPolicy(allow=["sh -c *"], default="deny")))
    result = await hv.call("run_command", {"cmd": "sh -c 'echo a && echo b'"})
    assert result.ok and result.output.startswith("a\nb\n")


async def test_wildcard_allow_does_not_allow_a_shell(sandbox: Any) -> None:
    hv = sandbox.make(permissions=Permissions(commands=CommandPolicy(allow=["*"])))
    result = await hv.call("run_command", {"cmd": "sh -c id"})
    assert result.error.startswith("refused (shell-not-allowed)")


async def test_ask_command_approved_runs_and_records_the_decision(sandbox: Any) -> None:
    asked: list[tuple[str, str]] = []

    async def approver(action: str, detail: str) -> bool:
        asked.append((action, detail))
        return True

    hv = sandbox.make(
        permissions=Permissions(commands=CommandPolicy(allow=["git *"]), ask=["command"]), approver=approver
    )
    allowed = await hv.call("run_command", {"cmd": "git status --short"})
    asked_for = await hv.call("run_command", {"cmd": "T=${secret:API_KEY} printenv T"})
    assert allowed.ok and asked_for.ok
    assert asked == [("command", "T=${secret:API_KEY} printenv T")]
    kinds = [(type(c).__name__, getattr(c, "decision", "")) for c in sandbox.session.changes]
    assert kinds == [
        ("CommandRunChange", ""),
        ("ApprovalChange", "requested"),
        ("ApprovalChange", "approved"),
        ("CommandRunChange", ""),
    ]
    sandbox.assert_recorded()


async def test_write_glob_asks_only_for_matching_paths(sandbox: Any) -> None:
    asked: list[tuple[str, str]] = []

    async def approver(action: str, detail: str) -> bool:
        asked.append((action, detail))
        return True

    hv = sandbox.make(permissions=Permissions(ask=["write:deploy/*"]), approver=approver)
    assert (await hv.call("write_file", {"path": "src/x.py", "content": "x"})).ok
    assert (await hv.call("write_file", {"path": "deploy/prod.yaml", "content": "x"})).ok
    assert asked == [("write:deploy/*", "deploy/prod.yaml")]


async def test_git_merge_is_never_a_command(sandbox: Any) -> None:
    # Even with can_merge and an approver that says yes: merging is the runner's, through its gate.
    asked: list[str] = []

    async def approver(action: str, detail: str) -> bool:
        asked.append(action)
        return True

    hv = sandbox.make(
        permissions=Permissions(can_merge=True, ask=["merge"], commands=CommandPolicy(allow=["git *"])),
        approver=approver,
    )
    result = await hv.call("run_command", {"cmd": "git merge main"})
    assert asked == [] and result.error.startswith("refused (not-permitted)")


async def test_command_writes_ask_like_write_file(sandbox: Any) -> None:
    asked: list[tuple[str, str]] = []

    async def approver(action: str, detail: str) -> bool:
        asked.append((action, detail))
        return action != "write:deploy/*"

    (sandbox.ws / "deploy").mkdir()
    hv = sandbox.make(
        permissions=Permissions(ask=["write:deploy/*"], commands=CommandPolicy(allow=["cp *", "touch *", "git *"])),
        approver=approver,
    )
    assert (await hv.call("run_command", {"cmd": "cp README.md src/copy.md"})).ok
    refused = await hv.call("run_command", {"cmd": "cp README.md deploy/prod.yaml"})
    assert (
        refused.error.startswith("refused (approval-rejected)") and not (sandbox.ws / "deploy" / "prod.yaml").exists()
    )
    refused = await hv.call("run_command", {"cmd": "git log -1 --output=deploy/log.txt"})
    assert refused.error.startswith("refused (approval-rejected)") and not (sandbox.ws / "deploy" / "log.txt").exists()
    assert asked == [("write:deploy/*", "deploy/prod.yaml"), ("write:deploy/*", "deploy/log.txt")]
    assert (sandbox.ws / "src" / "copy.md").exists()


async def test_request_approval(sandbox: Any) -> None:
    async def approver(action: str, detail: str) -> bool:
        return action == "push_default_branch"

    hv = sandbox.make(approver=approver)
    yes = await hv.call("request_approval", {"action": "push_default_branch", "detail": "release"})
    no = await hv.call("request_approval", {"action": "merge"})
    assert yes.ok and not no.ok
    decisions = [(c.action, c.decision) for c in sandbox.session.changes if isinstance(c, ApprovalChange)]
    assert decisions == [
        ("push_default_branch", "requested"),
        ("push_default_branch", "approved"),
        ("merge", "requested"),
        ("merge", "rejected"),
    ]


async def test_git_status_diff_commit(sandbox: Any, git_cmd: Any) -> None:
    hv = sandbox.hv
    await hv.call("write_file", {"path": "README.md", "content": "# demo\nchanged\n"})
    status = await hv.call("git_status", {})
    assert "## main" in status.output and " M README.md" in status.output
    diff = await hv.call("git_diff", {})
    assert "+changed" in diff.output and "-hello world" in diff.output
    ledger = hv.ledger_hash
    commit = await hv.call("git_commit", {"message": "change readme"})
    assert commit.ok, commit.error
    change = sandbox.session.changes[-1]
    assert isinstance(change, GitCommitChange)
    assert change.sha == git_cmd(sandbox.ws, "rev-parse", "HEAD").strip() and change.branch == "main"
    trailers = git_cmd(sandbox.ws, "log", "-1", "--format=%(trailers:only,unfold)")
    assert trailers.split("\n")[:3] == ["Nexus-Run: run_test", "Nexus-Agent: agent_test", f"Nexus-Ledger: {ledger}"]
    again = await hv.call("git_commit", {"message": "nothing"})
    assert again.error.startswith("refused (nothing-to-commit)")
    assert (await hv.call("git_diff", {})).output == "no changes"


async def test_git_tools_without_a_private_git_dir_are_refused(sandbox: Any, tmp_path: Any) -> None:
    plain = tmp_path / "plain"
    (plain / ".git").mkdir(parents=True)  # a repository inside the workspace is the agent's to rewrite: not used
    hv = Hypervisor(workspace=plain, permissions=Permissions(), session=sandbox.session, state_file=None)
    for tool in ("git_status", "git_diff", "git_log"):
        result = await hv.call(tool, {})
        assert not result.ok and result.error.startswith("refused (no-repository)")
    assert [c.reason for c in sandbox.session.changes[-3:]] == ["no-repository"] * 3


async def test_spawn_child_records_the_child(sandbox: Any) -> None:
    requests: list[dict] = []

    async def spawner(request: dict) -> dict:
        requests.append(request)
        return {"session_id": "ses_child_a", "task_id": "tsk_a"}

    hv = sandbox.make(spawner=spawner)
    result = await hv.call("spawn_child", {"title": "A", "description": "write a", "target_files": ["child-a.txt"]})
    assert result.ok and msgspec.json.decode(result.output) == {"session_id": "ses_child_a", "task_id": "tsk_a"}
    assert requests == [{"title": "A", "description": "write a", "target_files": ["child-a.txt"]}]
    change = sandbox.session.changes[-1]
    assert isinstance(change, ChildSessionChange) and (change.child_session_id, change.task_id) == (
        "ses_child_a",
        "tsk_a",
    )
    escape = await hv.call("spawn_child", {"title": "B", "target_files": ["../b.txt"]})
    assert escape.error.startswith("refused (path-escape)") and len(requests) == 1


async def test_spawner_failure_is_an_answer_not_a_crash(sandbox: Any) -> None:
    async def spawner(request: dict) -> dict:
        raise RuntimeError("core-api said no")

    result = await sandbox.make(spawner=spawner).call("spawn_child", {"title": "A"})
    assert result.error == "refused (spawn-failed): core-api said no"


async def test_finish_ends_the_session(sandbox: Any) -> None:
    hv = sandbox.hv
    assert hv.finished is None
    assert (await hv.call("finish", {"summary": "all done"})).ok
    assert hv.finished == "all done"
    late = await hv.call("note", {"message": "one more"})
    assert late.error.startswith("refused (session-finished)")
    assert isinstance(sandbox.session.changes[-2], NoteChange)


async def test_tool_specs(sandbox: Any) -> None:
    specs = sandbox.hv.tool_specs()
    assert all(isinstance(s, ToolSpecJSON) for s in specs)
    assert [s.name for s in specs] == [n for n in ALL_TOOLS if n != "spawn_child"]  # no spawner, no tool

    async def spawner(request: dict) -> dict:
        return {}

    meta = sandbox.make(spawner=spawner)
    assert [s.name for s in meta.tool_specs()] == ALL_TOOLS
    assert set(ALL_TOOLS) == TOOL_NAMES  # the catalog core-api checks agent documents against
    assert [s.name for s in meta.tool_specs(["finish", "read_file", "nope"])] == ["read_file", "finish"]
    by_name = {s.name: s.parameters for s in meta.tool_specs()}
    assert by_name["edit_file"]["required"] == ["path", "old", "new"]
    assert by_name["edit_file"]["additionalProperties"] is False
    assert by_name["run_command"]["properties"]["cmd"]["type"] == "string"
    assert by_name["git_status"] == {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
    msgspec.json.encode(specs)  # serialisable for any provider


async def test_allowed_tools_are_enforced_not_just_advertised(sandbox: Any) -> None:
    hv = sandbox.make(allowed_tools=["read_file", "finish"])
    assert [s.name for s in hv.tool_specs()] == ["read_file", "finish"]
    result = await hv.call("write_file", {"path": "x", "content": "x"})
    assert result.error.startswith("refused (tool-not-allowed)")


async def test_a_resumed_session_continues_the_chain(sandbox: Any) -> None:
    await sandbox.hv.call("note", {"message": "first life"})
    restored = read_state(sandbox.state_file)
    hv = Hypervisor(workspace=sandbox.ws, permissions=Permissions(), session=restored, state_file=sandbox.state_file)
    assert hv.ledger_hash == sandbox.hv.ledger_hash
    await hv.call("note", {"message": "second life"})
    chain = read_state(sandbox.state_file).changes
    assert [c.seq for c in chain] == [0, 1]
    assert verify_chain(chain).ok and verify_chain(chain).final_hash == hv.ledger_hash


async def test_every_change_reaches_the_recorder_sealed_and_in_order(sandbox: Any) -> None:
    await sandbox.hv.call("note", {"message": "a"})
    await sandbox.hv.call("read_file", {"path": "/etc/passwd"})
    await sandbox.hv.call("run_command", {"cmd": "true"})
    assert [type(e) for e in sandbox.events] == [NoteChange, RefusedChange, CommandRunChange]
    assert sandbox.events[1].prev_hash == sandbox.events[0].hash != ""
    assert sandbox.hv.ledger_hash == sandbox.events[-1].hash
    sandbox.assert_recorded()

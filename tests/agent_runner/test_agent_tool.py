"""nexus-agent-tool as an external brain would use it: real subprocesses, one JSON object per
call on stdout, errors as JSON with a non-zero exit, and the session files as the record.
Includes the hypervisor flow: one meta session and three children on one project."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nexus.domain.ledger import verify_chain
from nexus.domain.sessions import SessionState


@pytest.fixture
def tool(tmp_path: Path) -> Any:
    sessions = tmp_path / "sessions"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env["NEXUS_AGENT_SESSIONS_DIR"] = str(sessions)

    def run(*args: str, stdin: str | None = None, expect: int = 0) -> dict:
        proc = subprocess.run(
            [sys.executable, "-m", "nexus.agent_runner.agent_tool", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        lines = proc.stdout.splitlines()
        assert len(lines) == 1, proc.stdout + proc.stderr  # exactly one JSON object
        out = json.loads(lines[0])
        assert proc.returncode == expect, out
        assert out["ok"] is (expect == 0)
        return out

    run.sessions = sessions  # type: ignore[attr-defined]  # the helper carries its sessions dir
    return run


def _state(sessions: Path, session_id: str) -> SessionState:
    return msgspec.json.decode((sessions / f"{session_id}.json").read_bytes(), type=SessionState)


def test_meta_and_three_children(tool: Any, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    meta = tool("start", "--project", str(project), "--backend", "qwen")["sessionId"]
    children = {letter: tool("start", "--project", str(project), "--parent", meta)["sessionId"] for letter in "abc"}
    assert len({meta, *children.values()}) == 4

    tool("log", "--session", meta, "--message", "decomposing the goal into three children")
    plan = {
        "metaSessionId": meta,
        "children": [{"sessionId": sid, "targetFile": f"child-{letter}.txt"} for letter, sid in children.items()],
    }
    tool("write-file", "--session", meta, "--path", "meta-plan.json", "--content", json.dumps(plan))
    for letter, sid in children.items():
        written = tool("write-file", "--session-id", sid, "--path", f"child-{letter}.txt", stdin=f"SESSION_ID={sid}\n")
        assert written["change"]["relPath"] == f"child-{letter}.txt"
        tool("finish", "--session", sid, "--summary", f"wrote child-{letter}.txt")
    tool("finish", "--session", meta, "--summary", "all children done")

    on_disk = json.loads((project / "meta-plan.json").read_text())
    assert {c["sessionId"] for c in on_disk["children"]} == set(children.values())
    assert [c["targetFile"] for c in on_disk["children"]] == ["child-a.txt", "child-b.txt", "child-c.txt"]
    for letter, sid in children.items():
        assert (project / f"child-{letter}.txt").read_text() == f"SESSION_ID={sid}\n"

    files = sorted(tool.sessions.glob("*.json"))
    states = [_state(tool.sessions, sid) for sid in [meta, *children.values()]]
    assert len([f for f in files if not f.name.endswith(".permissions.json")]) == 4
    for state in states:
        assert any(c.__struct_config__.tag == "file-write" for c in state.changes)
        assert state.status == "completed"
        assert verify_chain(state.changes).ok
    assert states[0].parent_session_id is None
    assert all(s.parent_session_id == meta for s in states[1:])
    assert states[0].notes == ["decomposing the goal into three children"]


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    return project


def test_run_and_status(tool: Any, tmp_path: Path) -> None:
    policy = tmp_path / "perms.json"
    policy.write_text(json.dumps({"commands": {"allow": ["python3 *", "echo *"], "default": "deny"}}))
    sid = tool("start", "--project", str(_project(tmp_path)), "--session-id", "ses_run", "--permissions", str(policy))[
        "sessionId"
    ]
    ran = tool("run", "--session", sid, "--", "python3", "-c", "print('hi'); raise SystemExit(4)")
    assert ran["exitCode"] == 4 and ran["output"].startswith("hi\n")
    line = tool("run", "--session", sid, "--cmd", "echo a; b", "--timeout", "5")
    assert line["output"].startswith("a; b\n")
    status = tool("status", "--session", sid)
    assert status["ledger"]["ok"] and status["ledger"]["finalHash"] == line["ledgerHash"]
    assert [c["type"] for c in status["session"]["changes"]] == ["command-run", "command-run"]


def test_refusals_are_json_errors_and_recorded(tool: Any, tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    sid = tool("start", "--project", str(project))["sessionId"]
    escape = tool("write-file", "--session", sid, "--path", "../outside.txt", "--content", "x", expect=1)
    assert escape["error"].startswith("refused (path-escape)")
    assert escape["change"]["type"] == "refused"
    shell = tool("run", "--session", sid, "--cmd", "sh -c 'touch ../outside.txt'", expect=1)
    assert shell["error"].startswith("refused (shell-not-allowed)")
    assert not (tmp_path / "outside.txt").exists()
    tool("finish", "--session", sid)
    late = tool("log", "--session", sid, "--message", "after the end", expect=1)
    assert late["error"].startswith("refused (session-finished)")
    reasons = [c.reason for c in _state(tool.sessions, sid).changes if c.__struct_config__.tag == "refused"]
    assert reasons == ["path-escape", "shell-not-allowed", "session-finished"]


def test_permissions_file_sets_the_command_policy(tool: Any, tmp_path: Path) -> None:
    policy = tmp_path / "perms.json"
    policy.write_text(json.dumps({"commands": {"allow": ["echo *"], "default": "deny"}}))
    sid = tool("start", "--project", str(_project(tmp_path)), "--permissions", str(policy))["sessionId"]
    assert tool("run", "--session", sid, "--cmd", "echo ok")["exitCode"] == 0
    assert tool("run", "--session", sid, "--cmd", "touch x", expect=1)["error"].startswith("refused (policy-deny)")


@pytest.mark.parametrize(
    "args",
    [
        ["bogus"],
        ["log", "--message", "no session"],
        ["log", "--session", "../../etc/passwd", "--message", "x"],
        ["run", "--session", "s"],
        ["start"],
    ],
    ids=["unknown-command", "missing-session", "session-id-traversal", "run-without-command", "start-without-project"],
)
def test_usage_errors_are_json(tool: Any, args: list[str]) -> None:
    assert "error" in tool(*args, expect=2)


def test_unknown_session_and_missing_project(tool: Any, tmp_path: Path) -> None:
    assert "no session" in tool("status", "--session", "ses_missing", expect=1)["error"]
    assert "not a directory" in tool("start", "--project", str(tmp_path / "nope"), expect=1)["error"]
    tool("start", "--project", str(_project(tmp_path)), "--session-id", "dup")
    assert (
        "already exists"
        in tool("start", "--project", str(_project(tmp_path)), "--session-id", "dup", expect=1)["error"]
    )


def test_without_permissions_commands_are_denied_and_home_is_not_the_project(tool: Any, tmp_path: Path) -> None:
    sid = tool("start", "--project", str(_project(tmp_path)))["sessionId"]
    assert tool("run", "--session", sid, "--cmd", "echo hi", expect=1)["error"].startswith("refused (policy-deny)")
    policy = tmp_path / "perms.json"
    policy.write_text(json.dumps({"commands": {"allow": ["env"], "default": "deny"}}))
    sid = tool("start", "--project", str(_project(tmp_path)), "--permissions", str(policy))["sessionId"]
    home = next(
        line[5:]
        for line in tool("run", "--session", sid, "--cmd", "env")["output"].splitlines()
        if line.startswith("HOME=")
    )
    assert not home.startswith(str(_project(tmp_path))) and Path(home).is_dir() and not any(Path(home).iterdir())


def test_a_sessions_directory_inside_the_project_is_refused(tool: Any, tmp_path: Path) -> None:
    # The fixture's sessions directory is tmp_path/sessions: a project at tmp_path holds it.
    out = tool("start", "--project", str(tmp_path), expect=2)
    assert "sessions directory may not lie inside the project" in out["error"]
    assert not any(tool.sessions.glob("*.permissions.json"))

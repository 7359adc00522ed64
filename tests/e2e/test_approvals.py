"""The approval round trip through every service: an action the agent document marks "ask"
pauses the run in waiting_approval with a pending approval; approve → the run resumes and the
command runs; reject → the command is refused and the run stops, failed, naming who and why.
Merging into the default branch waits for its approval too."""

import subprocess

import httpx
import pytest

from tests.e2e.conftest import git, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.infra]

ASKER = """
steps:
  - tool_calls: [{name: run_command, args: {cmd: "touch approved.txt"}}]
  - tool_calls: [{name: write_file, args: {path: after.txt, content: "the script went on"}}]
  - say: done
"""
MERGER = """
steps:
  - tool_calls: [{name: write_file, args: {path: merged.txt, content: "on main after approval"}}]
  - say: done
"""
FINAL = ("succeeded", "failed", "cancelled", "timed_out")


async def _agent(api: httpx.AsyncClient, name: str, script: str, permissions: dict) -> None:
    r = await api.post(
        "/v1/agents",
        json={
            "name": name,
            "system_prompt": "test",
            "permissions": permissions,
            "llm": {"provider": "scripted", "script": script},
        },
    )
    assert r.status_code == 201, r.text


async def _task(api: httpx.AsyncClient, title: str, agent: str) -> dict:
    r = await api.post("/v1/tasks", json={"title": title, "assignee": agent, "repository": "demo"})
    assert r.status_code == 201, r.text
    return r.json()


async def _pending(api: httpx.AsyncClient, run_id: str) -> dict:
    await wait_for(api, f"/v1/runs/{run_id}", lambda run: run["status"] == "waiting_approval")
    page = await wait_for(api, f"/v1/approvals?run_id={run_id}&status=pending", lambda p: len(p["items"]) == 1)
    return page["items"][0]


def _changes(run: dict, kind: str) -> list[dict]:
    (session,) = run["sessions"]
    return [c for c in session["changes"] if c["type"] == kind]


async def test_approve_resumes_reject_stops_and_merge_waits(api: httpx.AsyncClient, bare_repo) -> None:
    await _agent(api, "asker", ASKER, {"can_commit": True, "commands": {"allow": ["echo *"], "default": "ask"}})
    await _agent(api, "merger", MERGER, {"can_commit": True, "can_merge": True, "ask": ["push_default_branch"]})
    r = await api.post("/v1/repositories", json={"name": "demo", "url": str(bare_repo), "default_branch": "main"})
    assert r.status_code == 201, r.text
    yes, no, merge = (
        await _task(api, "approve me", "asker"),
        await _task(api, "reject me", "asker"),
        await _task(api, "merge me", "merger"),
    )

    # Both asker runs pause on the command outside the allow-list; the merger on merging into main.
    approve_me = await _pending(api, yes["current_run_id"])
    reject_me = await _pending(api, no["current_run_id"])
    merge_me = await _pending(api, merge["current_run_id"])
    assert (approve_me["action"], approve_me["detail"]) == ("command", "touch approved.txt")
    assert merge_me["action"] == "push_default_branch" and "into main" in merge_me["detail"]
    assert git(bare_repo, "log", "--format=%s", "main") == "init"

    r = await api.post(f"/v1/approvals/{approve_me['id']}/approve", json={"reason": "fine"})
    assert r.status_code == 200, r.text
    r = await api.post(f"/v1/approvals/{reject_me['id']}/reject", json={"reason": "not on a Friday"})
    assert r.status_code == 200, r.text
    rejected = r.json()
    r = await api.post(f"/v1/approvals/{merge_me['id']}/approve", json={})
    assert r.status_code == 200, r.text
    r = await api.post(f"/v1/approvals/{approve_me['id']}/reject", json={"reason": "too late"})
    assert r.status_code == 409, r.text  # decided once

    # Approved: the run resumed, the command ran and is on the record, the script went on.
    run = await wait_for(api, f"/v1/runs/{yes['current_run_id']}", lambda x: x["status"] in FINAL)
    assert run["status"] == "succeeded", run
    assert [c["decision"] for c in _changes(run, "approval")] == ["requested", "approved"]
    (cmd,) = _changes(run, "command-run")
    assert cmd["cmd"] == "touch approved.txt" and cmd["exitCode"] == 0
    assert set(git(bare_repo, "ls-tree", "--name-only", run["branch"]).split()) == {
        "README.md",
        "approved.txt",
        "after.txt",
    }

    # Rejected: refused on the record, the run stopped there, failed, saying who and why.
    run = await wait_for(api, f"/v1/runs/{no['current_run_id']}", lambda x: x["status"] in FINAL)
    assert run["status"] == "failed", run
    assert run["reason"] == f"rejected by {rejected['decided_by']}: not on a Friday" and rejected["decided_by"]
    assert [c["decision"] for c in _changes(run, "approval")] == ["requested", "rejected"]
    assert [c["reason"] for c in _changes(run, "refused")] == ["approval-rejected"]
    assert not _changes(run, "command-run") and not _changes(run, "file-write")
    assert (await api.get(f"/v1/tasks/{no['id']}")).json()["status"] == "failed"
    with pytest.raises(subprocess.CalledProcessError):  # nothing was pushed
        git(bare_repo, "rev-parse", "--verify", f"nexus/{no['id']}/{no['current_run_id']}")

    # The merge into the default branch happened only after its approval.
    run = await wait_for(api, f"/v1/runs/{merge['current_run_id']}", lambda x: x["status"] in FINAL)
    assert run["status"] == "succeeded", run
    assert git(bare_repo, "show", "main:merged.txt") == "on main after approval"
    assert git(bare_repo, "rev-parse", "main") == run["commit_sha"]
    r = await api.get("/v1/approvals", params={"status": "all", "limit": 10})
    assert sorted(a["status"] for a in r.json()["items"]) == ["approved", "approved", "rejected"]

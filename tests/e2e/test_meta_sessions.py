"""Seed 004's example against the real stack: a goal's meta session splits the work into three
child sessions, each its own run (own process, own clone, own branch), and finishes once all
three are done.

Where the work lands: the meta run's branch nexus/<meta task>/<meta run> carries meta-plan.json;
each child's branch nexus/<child task>/<child run> carries that child's file. Nothing is merged
into main (the agents have can_merge false); a reviewer merges the branches they accept."""

import json

import httpx
import pytest

from tests.e2e.conftest import git, wait_for
from tests.e2e.test_first_run import read_sse

pytestmark = [pytest.mark.e2e, pytest.mark.infra]

PLANNER = """
steps:
  - say: "Three files, three child sessions."
    tool_calls:
      - {name: spawn_child, args: {title: "Write child-a", target_files: [child-a.txt], agent: child-writer}}
      - {name: spawn_child, args: {title: "Write child-b", target_files: [child-b.txt], agent: child-writer}}
      - {name: spawn_child, args: {title: "Write child-c", target_files: [child-c.txt], agent: child-writer}}
  - tool_calls: [{name: finish, args: {summary: "planned three children"}}]
"""
CHILD = """
steps:
  - tool_calls: [{name: write_file, args: {path: "{{target_file}}", content: "SESSION_ID={{session_id}}\\n"}}]
  - tool_calls: [{name: finish, args: {summary: "wrote {{target_file}}"}}]
"""
FINAL = ("succeeded", "failed", "cancelled", "timed_out")


async def _agent(api: httpx.AsyncClient, name: str, script: str, tools: list[str]) -> dict:
    r = await api.post(
        "/v1/agents",
        json={
            "name": name,
            "system_prompt": f"You are {name}.",
            "tools": tools,
            "permissions": {"can_commit": True, "can_merge": False},
            "llm": {"provider": "scripted", "script": script},
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


async def test_meta_session_with_three_children(api: httpx.AsyncClient, bare_repo) -> None:
    await _agent(api, "planner", PLANNER, ["spawn_child", "write_file", "note", "finish", "git_commit"])
    await _agent(api, "child-writer", CHILD, ["write_file", "finish", "git_commit"])
    r = await api.post("/v1/repositories", json={"name": "demo", "url": str(bare_repo), "default_branch": "main"})
    assert r.status_code == 201, r.text
    r = await api.post(
        "/v1/goals",
        json={
            "title": "Three files",
            "description": "child-a, child-b, child-c",
            "meta_agent": "planner",
            "repository": "demo",
        },
    )
    assert r.status_code == 201, r.text
    goal = r.json()
    assert goal["meta_run_id"], goal

    meta = await wait_for(api, f"/v1/runs/{goal['meta_run_id']}", lambda run: run["status"] in FINAL, attempts=1200)
    assert meta["status"] == "succeeded", meta
    meta_sid = meta["session_id"]
    assert meta["parent_session_id"] is None
    # A child tells its meta session over the agent kernel as soon as it ends, so core-api may still be
    # recording the children's ends when the meta run is over.
    # The goal's own runs: other tests' runs on the shared stack once made the count without this goal's.
    goal_runs = f"/v1/runs?goal_id={goal['id']}&limit=50"
    await wait_for(api, goal_runs, lambda page: sum(r["status"] in FINAL for r in page["items"]) == 4)
    children = (await api.get("/v1/runs", params={"goal_id": goal["id"], "limit": 50})).json()["items"]
    children = [c for c in children if c["id"] != meta["id"]]
    assert len(children) == 3, children
    assert all(c["status"] == "succeeded" for c in children), children
    assert all(c["parent_session_id"] == meta_sid and c["parent_run_id"] == meta["id"] for c in children)
    # The session tree lives on the agent kernel: each child, in its own runner process, told the
    # meta session's kernel agent over NATS.
    events = await read_sse(api, f"/v1/runs/{meta['id']}/events")
    logs = [json.loads(e["data"])["data"]["message"] for e in events if e["event"] == "run.log"]
    # Each child tells its meta after its verdict is out, and core-api's `run.child_finished` follows the
    # same verdict: on a loaded box core-api's word can come first for a child (a clean-clone run saw "2 of
    # 3"). Either feeds the meta; the kernel's path must have carried some of them.
    heard = [m for m in logs if m.endswith(" of 3 children reported their end over the agent kernel")]
    assert heard and heard[0].split()[0] in {"1", "2", "3"}, logs

    # meta-plan.json, on the meta run's branch, names the three child sessions and their files.
    plan = json.loads(git(bare_repo, "show", f"{meta['branch']}:meta-plan.json"))
    assert plan["metaSessionId"] == meta_sid and plan["goalId"] == goal["id"]
    by_target = {c["targetFiles"][0]: c["sessionId"] for c in plan["children"]}
    assert sorted(by_target) == ["child-a.txt", "child-b.txt", "child-c.txt"]
    assert set(by_target.values()) == {c["session_id"] for c in children}
    for name in ("child-a.txt", "child-b.txt", "child-c.txt"):
        assert f"({by_target[name]}): succeeded" in meta["summary"]  # the meta session waited for each

    # Each child wrote SESSION_ID=<its own session id> on its own branch, and only its own file.
    for child in children:
        target = next(t for t, sid in by_target.items() if sid == child["session_id"])
        assert child["branch"].startswith(f"nexus/{child['task_id']}/{child['id']}")
        assert git(bare_repo, "show", f"{child['branch']}:{target}") == f"SESSION_ID={child['session_id']}"
        tree = git(bare_repo, "ls-tree", "--name-only", child["branch"]).split()
        assert sorted(tree) == ["README.md", target]
        task = (await api.get(f"/v1/tasks/{child['task_id']}")).json()
        assert task["target_files"] == [target] and task["parent_session_id"] == meta_sid and task["status"] == "done"
    assert git(bare_repo, "log", "--format=%s", "main") == "init"  # nothing merged

    # Four session records, each with a file-write; children name the meta session as parent.
    sessions = []
    for sid in [meta_sid, *by_target.values()]:
        r = await api.get(f"/v1/sessions/{sid}")
        assert r.status_code == 200, r.text
        sessions.append(r.json())
    for s in sessions:
        assert s["status"] == "completed", s
        assert any(c["type"] == "file-write" for c in s["changes"]), s
    assert sessions[0]["parentSessionId"] is None
    assert [s["parentSessionId"] for s in sessions[1:]] == [meta_sid] * 3
    assert [c["childSessionId"] for c in sessions[0]["changes"] if c["type"] == "child-session"] == list(
        by_target.values()
    )
    assert len({s["projectPath"] for s in sessions}) == 4  # four working trees, none shared

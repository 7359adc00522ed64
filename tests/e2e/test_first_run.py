"""The walking skeleton: one task through core-api, the worker and a runner to a commit on the run's
branch, with all five services running (board-sync and telegram-gateway only have to stay up here;
test_board_sync and test_telegram check what they do)."""

import json

import httpx
import pytest

from tests.e2e.conftest import git, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.infra]

SCRIPT = """
steps:
  - say: "I will write the file, check it, and leave a note."
    tool_calls:
      - name: write_file
        args: {path: "hello.txt", content: "hello from {{run_id}}\\n"}
  - tool_calls:
      - name: run_command
        args: {cmd: "cat hello.txt"}
  - tool_calls:
      - name: note
        args: {message: "wrote hello.txt for task {{task_id}}"}
  - say: "Done: hello.txt is written."
"""


async def read_sse(client: httpx.AsyncClient, path: str, headers: dict | None = None) -> list[dict]:
    events, current = [], {}
    async with client.stream("GET", path, headers=headers or {}) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line == "":
                if current.get("data"):  # a comment-only message carries an empty data line
                    events.append(current)
                current = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                current[key] = value.lstrip(" ")
    return events


async def test_first_run(api: httpx.AsyncClient, bare_repo, tmp_path) -> None:
    r = await api.post("/v1/skills", json={"name": "house-style", "content": "# House style\nKeep files short."})
    assert r.status_code == 201, r.text
    r = await api.post(
        "/v1/agents",
        json={
            "name": "writer",
            "system_prompt": "You write small files.",
            "skills": ["house-style"],
            "tools": ["write_file", "run_command", "note", "read_file", "finish", "git_commit"],
            "permissions": {
                "can_commit": True,
                "can_merge": False,
                "commands": {"allow": ["cat *"], "default": "deny"},
            },
            "llm": {"provider": "scripted", "script": SCRIPT},
        },
    )
    assert r.status_code == 201, r.text
    agent = r.json()
    r = await api.post("/v1/repositories", json={"name": "demo", "url": str(bare_repo), "default_branch": "main"})
    assert r.status_code == 201, r.text
    r = await api.post("/v1/tasks", json={"title": "Write hello", "assignee": "writer", "repository": "demo"})
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["current_run_id"], task
    run_id = task["current_run_id"]

    task = await wait_for(api, f"/v1/tasks/{task['id']}", lambda t: t["status"] in ("done", "failed", "cancelled"))
    run = (await api.get(f"/v1/runs/{run_id}")).json()
    assert task["status"] == "done", run
    assert run["status"] == "succeeded", run
    assert run["agent_revision"] == agent["revision"] == 1
    assert [a["n"] for a in run["attempts"]] == [1] and run["attempts"][0]["status"] == "succeeded"

    # The run config as the seed shapes it, assembled by core-api.
    cfg = run["config"]
    assert cfg["run_id"] == run_id and cfg["agent_id"] == agent["id"] and cfg["task_id"] == task["id"]
    assert cfg["skills"] == ["# House style\nKeep files short."]
    assert "write_file" in cfg["tools"] and cfg["permissions"]["can_commit"] is True
    assert cfg["approval_ttl_s"] == 3600  # core-api's approval clock travels with the run, so the runner's agrees

    # The session's changes, each with a timestamp.
    (session,) = run["sessions"]
    kinds = [c["type"] for c in session["changes"]]
    assert {"file-write", "command-run", "note", "git-commit"} <= set(kinds), kinds
    fw = next(c for c in session["changes"] if c["type"] == "file-write")
    cr = next(c for c in session["changes"] if c["type"] == "command-run")
    assert fw["relPath"] == "hello.txt" and cr["cmd"] == "cat hello.txt" and cr["exitCode"] == 0
    assert all(c["timestamp"] for c in session["changes"])
    assert session["status"] == "completed" and session["notes"] == [f"wrote hello.txt for task {task['id']}"]

    # The commit is on the run's branch in the remote, with trailers naming the run and agent.
    branch = f"nexus/{task['id']}/{run_id}"
    assert run["branch"] == branch
    message = git(bare_repo, "log", "-1", "--format=%B", branch)
    assert f"Nexus-Run: {run_id}" in message and f"Nexus-Agent: {agent['id']}@1" in message
    assert git(bare_repo, "rev-parse", branch) == run["commit_sha"]
    assert git(bare_repo, "show", f"{branch}:hello.txt") == f"hello from {run_id}"

    # SSE replays the run's events (the run is over, so the stream ends after its final status).
    events = await read_sse(api, f"/v1/runs/{run_id}/events")
    types = [e["event"] for e in events]
    # The worker's "launched" is sent once its runner is started, so the runner may speak first.
    phases = [json.loads(e["data"])["data"]["phase"] for e in events if e["event"] == "run.runtime"]
    assert phases[0] == "launched", phases
    assert {"run.file_write", "run.command_run", "run.note", "run.llm", "run.tool", "run.session"} <= set(types)
    final = [json.loads(e["data"])["data"] for e in events if e["event"] == "run.status"]
    assert final[0]["status"] == "running" and final[-1]["status"] == "succeeded"
    # Resuming after the third event replays exactly the rest.
    rest = await read_sse(api, f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": events[2]["id"]})
    assert [e["id"] for e in rest] == [e["id"] for e in events[3:]]

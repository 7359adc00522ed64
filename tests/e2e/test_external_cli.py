"""An agent whose brain is an external coding CLI, through core-api, the worker and a runner (the
other services running, checked only to stay up): the runner attaches
the CLI through a kernel bridge, the CLI acts only through the hypervisor, and the work lands."""

import json
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import git, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.infra]
CLI = Path(__file__).resolve().parents[2] / "examples" / "bridges" / "python" / "scripted_cli.py"
STEPS = [
    {"tool": "write_file", "arguments": {"path": "cli.txt", "content": "written by the CLI\n"}},
    {"tool": "run_command", "arguments": {"cmd": "cat cli.txt"}},
    {"usage": {"input_tokens": 40, "output_tokens": 10, "cost_usd": 0.001}},
    {"tool": "note", "arguments": {"message": "the CLI wrote cli.txt"}},
    {"tool": "finish", "arguments": {"summary": "cli.txt is written"}},
]


async def test_an_external_cli_agent_runs_a_task_to_a_commit(api: httpx.AsyncClient, bare_repo) -> None:
    r = await api.post(
        "/v1/agents",
        json={
            "name": "cli-writer",
            "system_prompt": "You write small files.",
            "tools": ["write_file", "run_command", "note", "finish"],
            "permissions": {"can_commit": True, "commands": {"allow": ["cat *"], "default": "deny"}},
            "llm": {
                "provider": "external",
                "model": "scripted-cli",
                "command": [sys.executable, str(CLI), json.dumps(STEPS)],
            },
        },
    )
    assert r.status_code == 201, r.text
    r = await api.post("/v1/repositories", json={"name": "cli-demo", "url": str(bare_repo), "default_branch": "main"})
    assert r.status_code == 201, r.text
    r = await api.post("/v1/tasks", json={"title": "Write cli.txt", "assignee": "cli-writer", "repository": "cli-demo"})
    assert r.status_code == 201, r.text
    task = r.json()
    run_id = task["current_run_id"]
    task = await wait_for(api, f"/v1/tasks/{task['id']}", lambda t: t["status"] in ("done", "failed", "cancelled"))
    run = (await api.get(f"/v1/runs/{run_id}")).json()
    assert task["status"] == "done" and run["status"] == "succeeded", run
    assert run["summary"] == "cli.txt is written" and run["usage"]["input_tokens"] == 40, run
    (session,) = run["sessions"]
    assert session["backend"] == "scripted-cli" and session["status"] == "completed", session
    kinds = [c["type"] for c in session["changes"]]
    assert {"file-write", "command-run", "note", "git-commit"} <= set(kinds), kinds
    assert git(bare_repo, "show", f"{run['branch']}:cli.txt") == "written by the CLI"
    assert git(bare_repo, "rev-parse", run["branch"]) == run["commit_sha"]

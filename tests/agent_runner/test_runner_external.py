"""An external coding CLI as a run's brain: started by the runner as a kernel bridge child, one more
kernel agent of the session tree, acting only by asking the hypervisor agent. The runner is its own
process against the real NATS; the CLI is examples/bridges/python/scripted_cli.py, a real child."""

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

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
CLI = Path(__file__).resolve().parents[2] / "examples" / "bridges" / "python" / "scripted_cli.py"


def external(steps: list[dict], *, bare: Path | None = None, command: list[str] | None = None, **fields):
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    if bare is not None:
        fields["repo"] = {"url": str(bare), "ref": "main", "branch": f"nexus/task_t/{run_id}", "target_branch": "main"}
    llm = {
        "provider": "external",
        "model": "scripted-cli",
        "command": command or [sys.executable, str(CLI), json.dumps(steps)],
    }
    return config("", run_id=run_id, **(fields | {"llm": llm}))


def logs(events) -> list[str]:
    return [e["data"]["message"] for _, e in events if e["type"] == "run.log"]


async def test_a_cli_works_only_through_the_hypervisor_and_its_work_is_committed(js, nats_url, tmp_path) -> None:
    bare = bare_repo(tmp_path)
    steps = [
        {"tool": "write_file", "arguments": {"path": "feature.txt", "content": "{{task}}\n"}},
        {"tool": "run_command", "arguments": {"cmd": "git status --short"}},
        {"tool": "write_file", "arguments": {"path": "../escape.txt", "content": "no"}},
        {"usage": {"input_tokens": 120, "output_tokens": 30, "cost_usd": 0.002}},
        {"tool": "note", "arguments": {"message": "wrote the feature"}},
        {"tool": "finish", "arguments": {"summary": "feature written by the CLI"}},
    ]
    r = await start_runner(
        tmp_path, nats_url, external(steps, bare=bare, permissions={"commands": {"allow": ["git status*"]}})
    )
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "succeeded" and end["summary"] == "feature written by the CLI", end
    assert end["usage"]["input_tokens"] == 120 and end["usage"]["output_tokens"] == 30, end
    assert [c["relPath"] for c in changes(events, "file-write")] == ["feature.txt"]
    assert [c["exitCode"] for c in changes(events, "command-run")] == [
        128
    ]  # no repository in the workspace: git tools only
    refused = changes(events, "refused")
    assert len(refused) == 1 and refused[0]["tool"] == "write_file", refused
    assert "wrote the feature" in [c["message"] for c in changes(events, "note")]
    tools = [(e["data"]["tool"], e["data"]["ok"]) for _, e in events if e["type"] == "run.tool"]
    assert tools == [
        ("write_file", True),
        ("run_command", True),
        ("write_file", False),
        ("note", True),
        ("finish", True),
    ]
    llm = [e["data"] for _, e in events if e["type"] == "run.llm"]
    assert [(x["provider"], x["input_tokens"]) for x in llm] == [("external", 120)]
    assert any(f"kernel agent {r.cfg.session_id}-cli" in m for m in logs(events)), logs(events)
    sessions = [e["data"] for _, e in events if e["type"] == "run.session"]
    assert sessions and {s["backend"] for s in sessions} == {"scripted-cli"}
    # The commit on the run's branch carries the file and the ledger hash of the change before it.
    assert git(bare, "show", f"{r.cfg.repo.branch}:feature.txt").startswith("# Task: Test task")
    recorded = changes(events)
    commit_at = next(i for i, c in enumerate(recorded) if c["type"] == "git-commit")
    trailer = git(bare, "log", "-1", "--format=%(trailers:key=Nexus-Ledger,valueonly)", r.cfg.repo.branch)
    assert trailer.strip() == recorded[commit_at - 1]["hash"] and end["ledger_hash"] == recorded[-1]["hash"]


async def test_a_cli_that_exits_non_zero_before_finish_fails_the_run(js, nats_url, tmp_path) -> None:
    r = await start_runner(
        tmp_path, nats_url, external([{"tool": "note", "arguments": {"message": "starting"}}, {"exit": 3}])
    )
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "failed" and end["reason"] == "external CLI exited with code 3 before it called finish", end
    assert [c["message"] for c in changes(events, "note")] == ["starting"]


async def test_a_cli_that_simply_ends_succeeds(js, nats_url, tmp_path) -> None:
    r = await start_runner(tmp_path, nats_url, external([{"tool": "note", "arguments": {"message": "only this"}}]))
    assert await r.exit_code() == 0, r.log()
    end = final_status(await read_events(js, r.cfg.run_id))
    assert end["status"] == "succeeded", end


async def test_the_step_limit_binds_the_cli(js, nats_url, tmp_path) -> None:
    steps = [{"tool": "note", "arguments": {"message": f"step {i}"}} for i in range(1, 5)]
    steps.append({"tool": "finish", "arguments": {"summary": "never"}})
    r = await start_runner(tmp_path, nats_url, external(steps, limits={"max_steps": 2}))
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "failed" and end["reason"] == "step limit of 2 reached", end
    assert [c["message"] for c in changes(events, "note")] == ["step 1", "step 2"]


async def test_the_token_limit_binds_the_cli_s_reported_spend(js, nats_url, tmp_path) -> None:
    steps = [
        {"usage": {"input_tokens": 900, "output_tokens": 200}},
        {"tool": "note", "arguments": {"message": "after"}},
        {"tool": "finish", "arguments": {"summary": "never"}},
    ]
    r = await start_runner(tmp_path, nats_url, external(steps, limits={"max_tokens": 1000}))
    assert await r.exit_code() == 0, r.log()
    end = final_status(await read_events(js, r.cfg.run_id))
    assert end["status"] == "failed" and end["reason"] == "token limit of 1000 reached (1100 used)", end
    assert end["usage"]["input_tokens"] == 900 and end["usage"]["output_tokens"] == 200, end  # what it spent, kept


@pytest.mark.parametrize(
    "fields",
    [{"limits": {"max_cost_usd": 0.01}}, {"budget": {"tokens": 1000}}, {"budget": {"usd": 0.05, "tokens": 10**6}}],
    ids=["max_cost_usd", "goal_tokens", "goal_usd"],
)
async def test_the_budget_binds_the_cli_s_reported_spend(js, nats_url, tmp_path, fields) -> None:
    """The agent's `max_cost_usd` and its goal's share bind what the CLI spends, as they bind a model the runner
    calls: past either, the CLI's next call is refused and the run ends `budget_exceeded`."""
    steps = [
        {"usage": {"input_tokens": 900, "output_tokens": 200, "cost_usd": 0.06}},
        {"tool": "note", "arguments": {"message": "after"}},
        {"tool": "finish", "arguments": {"summary": "never"}},
    ]
    r = await start_runner(tmp_path, nats_url, external(steps, **fields))
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "failed" and end["reason"] == "budget_exceeded", end
    assert end["usage"]["cost_usd"] == 0.06 and end["usage"]["output_tokens"] == 200, end
    assert "after" not in [c["message"] for c in changes(events, "note")]
    assert any("budget exceeded by the external CLI" in m for m in logs(events)), logs(events)


async def test_what_the_cli_writes_itself_is_named_and_it_never_sees_secrets(js, nats_url, tmp_path) -> None:
    bare = bare_repo(tmp_path)
    secret = "s3cr3t-" + uuid.uuid4().hex
    steps = [{"shell": "env > seen-env.txt"}, {"tool": "finish", "arguments": {"summary": "done"}}]
    r = await start_runner(
        tmp_path, nats_url, external(steps, bare=bare, secrets=["API_TOKEN"]), secrets={"API_TOKEN": secret}
    )
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    assert final_status(events)["status"] == "succeeded"
    seen = (r.workspace / "seen-env.txt").read_text()
    assert secret not in seen and "NEXUS_" not in seen.replace("NEXUS_AGENT_ID", ""), seen
    notes = [c["message"] for c in changes(events, "note")]
    assert "changed by commands or by the CLI outside the hypervisor's writes: seen-env.txt" in notes, notes


async def test_a_cli_that_cannot_start_fails_the_run_with_why(js, nats_url, tmp_path) -> None:
    cfg = external([], command=[str(tmp_path / "no-such-cli")])
    r = await start_runner(tmp_path, nats_url, cfg)
    assert await r.exit_code() == 0, r.log()
    end = final_status(await read_events(js, r.cfg.run_id))
    assert end["status"] == "failed" and end["reason"].startswith("external CLI no-such-cli did not start:"), end


def _alive(marker: str) -> bool:
    return subprocess.run(["pgrep", "-f", f"^{marker}$"], capture_output=True, check=False).returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_cancelling_the_run_stops_the_cli_and_everything_it_started(js, nats_url, tmp_path, sig) -> None:
    """SIGINT cancels a run as SIGTERM does: the run says it was cancelled (asyncio's own SIGINT handler
    ended it with no verdict)."""
    marker = f"sleep 300.{uuid.uuid4().int % 10**9:09d}"  # the CLI's own grandchild, by its exact command line
    r = await start_runner(tmp_path, nats_url, external([{"shell": f"{marker}; echo after"}]))
    for _ in range(300):  # a bounded wait for the CLI's own child to be running
        if _alive(marker):
            break
        await asyncio.sleep(0.1)
    assert _alive(marker), r.log()
    r.proc.send_signal(sig)
    assert await r.exit_code() == 4, r.log()
    assert final_status(await read_events(js, r.cfg.run_id))["status"] == "cancelled"
    for _ in range(100):
        if not _alive(marker):
            break
        await asyncio.sleep(0.1)
    assert not _alive(marker), "the CLI's shell outlived the cancelled run"


async def test_a_cli_that_floods_the_runners_log_cannot_grow_it_past_its_limit(js, nats_url, tmp_path) -> None:
    """What the agent does reaches the runner's log (here: each malformed usage event is a warning line), and
    that log may live in memory (the worker's run files): 20,000 such events, ~5 MB of log without the
    bound, leave at most the limit there, and the run goes on to its end."""
    steps = [{"usage": {"input_tokens": "many"}}] * 20000 + [{"tool": "finish", "arguments": {"summary": "done"}}]
    script = tmp_path / "flood.json"
    script.write_text(json.dumps(steps))
    cfg = external(steps, command=[sys.executable, str(CLI), str(script)])
    r = await start_runner(tmp_path, nats_url, cfg, env={"NEXUS_LOG_LIMIT": "50000"})
    assert await r.exit_code() == 0, r.log()[-2000:]
    assert final_status(await read_events(js, r.cfg.run_id))["status"] == "succeeded"
    size = (r.dir / "runner.log").stat().st_size
    assert size <= 50000 + 200, size
    assert "non-numeric fields was ignored" in r.log() and "runner.log reached its limit" in r.log()

"""Approvals as the runner lives them (no core-api: the test publishes the decision where core-api
would). Resume on approve, stop on reject, deny on expiry; and the runner's own gated action,
merging into the target branch, only with can_merge and, where asked, approval."""

import uuid
from datetime import datetime

import pytest

from tests.agent_runner.test_runner_support import (  # noqa: F401 — pytest fixtures, used as parameters
    bare_repo,
    changes,
    config,
    decide,
    final_status,
    git,
    js,
    read_events,
    start_runner,
    wait_event,
)

pytestmark = pytest.mark.infra

ASK = {"commands": {"allow": ["echo *"], "default": "ask"}}
SCRIPT = """
steps:
  - tool_calls: [{name: run_command, args: {cmd: "touch approved.txt"}}]
  - tool_calls: [{name: note, args: {message: "after the command"}}]
  - say: done
"""


async def _requested(js, run_id: str) -> dict:
    return (await wait_event(js, run_id, lambda t, d: t == "run.approval_requested"))["data"]


async def test_approve_resumes(js, nats_url, tmp_path) -> None:
    r = await start_runner(tmp_path, nats_url, config(SCRIPT, permissions=ASK))
    req = await _requested(js, r.cfg.run_id)
    assert (
        req["action"] == "command" and req["detail"] == "touch approved.txt" and req["session_id"] == r.cfg.session_id
    )
    await wait_event(js, r.cfg.run_id, lambda t, d: t == "run.status" and d["status"] == "waiting_approval")
    assert not (r.workspace / "approved.txt").exists()  # paused: nothing ran yet
    await decide(js, r.cfg.run_id, req["approval_id"], "approved")
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    assert [e["data"]["status"] for _, e in events if e["type"] == "run.status"] == [
        "running",
        "waiting_approval",
        "running",
        "succeeded",
    ]
    assert [c["decision"] for c in changes(events, "approval")] == ["requested", "approved"]
    (cmd,) = changes(events, "command-run")
    assert cmd["cmd"] == "touch approved.txt" and cmd["exitCode"] == 0
    assert (r.workspace / "approved.txt").exists()


async def test_reject_stops_the_run(js, nats_url, tmp_path) -> None:
    r = await start_runner(tmp_path, nats_url, config(SCRIPT, permissions=ASK))
    req = await _requested(js, r.cfg.run_id)
    await decide(js, r.cfg.run_id, req["approval_id"], "rejected", reason="not on a Friday", by="lead@example.com")
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "failed" and end["reason"] == "rejected by lead@example.com: not on a Friday", end
    assert [c["decision"] for c in changes(events, "approval")] == ["requested", "rejected"]
    (refused,) = changes(events, "refused")
    assert refused["reason"] == "approval-rejected"
    assert not changes(events, "command-run") and not changes(events, "note")  # stopped: the script did not go on
    assert not (r.workspace / "approved.txt").exists()


async def test_expiry_denies_and_the_run_goes_on(js, nats_url, tmp_path) -> None:
    r = await start_runner(tmp_path, nats_url, config(SCRIPT, permissions=ASK))
    req = await _requested(js, r.cfg.run_id)
    await decide(js, r.cfg.run_id, req["approval_id"], "expired", reason="expired", by="system")
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    assert final_status(events)["status"] == "succeeded"
    assert [c["decision"] for c in changes(events, "approval")] == ["requested", "expired"]
    assert changes(events, "refused")[0]["reason"] == "approval-expired"
    assert not changes(events, "command-run") and [c["message"] for c in changes(events, "note")] == [
        "after the command"
    ]


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.mark.parametrize("where", ["runner setting", "run config"])
async def test_runner_backstop_expires_when_nobody_answers(js, nats_url, tmp_path, where) -> None:
    if where == "run config":  # core-api's approval_ttl_s travels in the run config and wins over the runner's default
        r = await start_runner(tmp_path, nats_url, config(SCRIPT, permissions=ASK, approval_ttl_s=0.2))
    else:
        r = await start_runner(
            tmp_path, nats_url, config(SCRIPT, permissions=ASK), env={"NEXUS_APPROVAL_TIMEOUT_S": "0.2"}
        )
    assert await r.exit_code() == 0, r.log()
    asked = next(e for _, e in await read_events(js, r.cfg.run_id) if e["type"] == "run.approval_requested")
    expires_in = _when(asked["data"]["expires_at"]) - _when(asked["occurred_at"])
    assert expires_in.total_seconds() < 5, asked  # 0.2 s, not the hour-long default
    events = await read_events(js, r.cfg.run_id)
    assert [c["decision"] for c in changes(events, "approval")] == ["requested", "expired"]
    assert final_status(events)["status"] == "succeeded"


WRITE = "steps:\n  - tool_calls: [{name: write_file, args: {path: feature.txt, content: merged}}]\n  - say: done\n"


def _with_repo(bare, **fields):
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    repo = {"url": str(bare), "ref": "main", "branch": f"nexus/task_t/{run_id}", "target_branch": "main"}
    return config(WRITE, run_id=run_id, repo=repo, **fields)


@pytest.mark.parametrize("decision", ["approved", "rejected"])
async def test_merge_waits_for_approval(js, nats_url, tmp_path, decision) -> None:
    bare = bare_repo(tmp_path)
    main_before = git(bare, "rev-parse", "main")
    cfg = _with_repo(bare, permissions={"can_merge": True, "ask": ["merge"]})
    r = await start_runner(tmp_path, nats_url, cfg)
    req = await _requested(js, cfg.run_id)
    assert req["action"] == "merge" and f"into main of {bare}" in req["detail"]
    await decide(
        js, cfg.run_id, req["approval_id"], decision, reason="looks good" if decision == "approved" else "wait for QA"
    )
    assert await r.exit_code() == 0, r.log()
    end = final_status(await read_events(js, cfg.run_id))
    branch_sha = git(bare, "rev-parse", cfg.repo.branch)  # the run's branch is pushed either way
    if decision == "approved":
        assert end["status"] == "succeeded", end
        assert git(bare, "rev-parse", "main") == branch_sha == end["commit_sha"]
        assert git(bare, "show", "main:feature.txt") == "merged"
    else:
        assert end["status"] == "failed" and end["reason"] == "rejected by lead@example.com: wait for QA", end
        assert git(bare, "rev-parse", "main") == main_before


async def test_no_merge_without_can_merge(js, nats_url, tmp_path) -> None:
    bare = bare_repo(tmp_path)
    main_before = git(bare, "rev-parse", "main")
    cfg = _with_repo(bare, permissions={"can_merge": False})
    r = await start_runner(tmp_path, nats_url, cfg)
    assert await r.exit_code() == 0, r.log()
    assert final_status(await read_events(js, cfg.run_id))["status"] == "succeeded"
    assert git(bare, "rev-parse", "main") == main_before
    assert git(bare, "show", f"{cfg.repo.branch}:feature.txt") == "merged"


async def test_merge_without_ask_merges_at_once(js, nats_url, tmp_path) -> None:
    bare = bare_repo(tmp_path)
    cfg = _with_repo(bare, permissions={"can_merge": True})
    r = await start_runner(tmp_path, nats_url, cfg)
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, cfg.run_id)
    assert final_status(events)["status"] == "succeeded"
    assert not [e for _, e in events if e["type"] == "run.approval_requested"]
    assert git(bare, "show", "main:feature.txt") == "merged"


async def test_an_approval_a_model_asks_for_shows_no_secret(js, nats_url, tmp_path) -> None:
    """`request_approval`'s action is the model's text: a secret's value in it (or in its detail) reaches
    neither the approval request a human is shown nor any other event of the run."""
    value = "sk-approve-Numbat-77Qx+/z"
    script = (
        "steps:\n"
        f"  - tool_calls: [{{name: request_approval, args: {{action: 'deploy {value}', detail: 'with {value}'}}}}]\n"
        "  - say: done\n"
    )
    r = await start_runner(tmp_path, nats_url, config(script, secrets=["API_TOKEN"]), secrets={"API_TOKEN": value})
    req = await _requested(js, r.cfg.run_id)
    assert req["action"] == "deploy ${secret:API_TOKEN}" and req["detail"] == "with ${secret:API_TOKEN}", req
    await decide(js, r.cfg.run_id, req["approval_id"], "approved")
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    assert final_status(events)["status"] == "succeeded"
    assert value not in str(events) and value not in r.log()


async def test_an_agent_asking_for_approval_in_a_loop_is_stopped_at_the_cap(js, nats_url, tmp_path) -> None:
    """Each request reaches every approver (a Telegram message to each team lead) and the database: an
    agent asking again and again, each one approved, used to flood both for as long as its steps lasted.
    At NEXUS_APPROVALS_MAX requests of one attempt the run fails with its reason (a request past it, made
    before the run's next check, is refused unheard: `approval-limit`)."""
    ask = "{name: request_approval, args: {action: deploy, detail: again}}"
    script = (
        f"steps:\n  - tool_calls: [{', '.join([ask] * 8)}]\n"
        + "  - tool_calls: [{name: note, args: {message: late}}]\n" * 3
    )
    r = await start_runner(tmp_path, nats_url, config(script), env={"NEXUS_APPROVALS_MAX": "3"})
    answered: set[str] = set()
    for _ in range(3):
        req = await wait_event(
            js, r.cfg.run_id, lambda t, d: t == "run.approval_requested" and d["approval_id"] not in answered
        )
        answered.add(req["data"]["approval_id"])
        await decide(js, r.cfg.run_id, req["data"]["approval_id"], "approved")
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "failed" and end["reason"] == "approval limit of 3 requests reached", end
    assert len([e for _, e in events if e["type"] == "run.approval_requested"]) == 3
    # The run ended at the call that reached the cap: the five asked for after it were never made.
    assert [c["decision"] for c in changes(events, "approval")] == ["requested", "approved"] * 3
    assert not changes(events, "note")

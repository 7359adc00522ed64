"""The agent's limits end the run with a clear reason: steps, tokens, wall clock. The runner runs
as its own process against the real NATS; what a user sees is its final run.status."""

import itertools
import json
import os
import resource

import pytest

from nexus.agent_runner.process_limits import ProcessLimits
from tests.agent_runner.llm.conftest import Reply, llm_server  # noqa: F401 — a fixture
from tests.agent_runner.test_runner_support import changes, config, final_status, js, read_events, start_runner  # noqa: F401 — fixtures and helpers, used by name

pytestmark = pytest.mark.infra

NOTES = (
    "steps:\n"
    + "".join(f"  - tool_calls: [{{name: note, args: {{message: 'step {i}'}}}}]\n" for i in range(1, 6))
    + "  - say: done\n"
)


async def test_step_limit(js, nats_url, tmp_path) -> None:
    r = await start_runner(tmp_path, nats_url, config(NOTES, limits={"max_steps": 2}))
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "failed" and end["reason"] == "step limit of 2 reached", end
    assert [c["message"] for c in changes(events, "note")] == ["step 1", "step 2"]  # nothing after the limit


async def test_token_limit(js, nats_url, tmp_path) -> None:
    r = await start_runner(tmp_path, nats_url, config(NOTES, limits={"max_tokens": 20}))
    assert await r.exit_code() == 0, r.log()
    end = final_status(await read_events(js, r.cfg.run_id))
    assert end["status"] == "failed" and end["reason"].startswith("token limit of 20 reached ("), end


async def test_wall_clock_limit(js, nats_url, tmp_path) -> None:
    script = "steps:\n  - tool_calls: [{name: run_command, args: {cmd: 'sleep 60'}}]\n  - say: never\n"
    cfg = config(script, limits={"wall_clock_s": 1}, permissions={"commands": {"allow": ["sleep *"]}})
    r = await start_runner(tmp_path, nats_url, cfg)
    assert await r.exit_code() == 3, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "timed_out" and end["reason"] == "wall-clock limit of 1s exceeded", end
    assert not changes(events, "command-run")  # the sleep never finished
    # The session it opened ends with the verdict, as an error (not left open for ever).
    assert (end["session"]["session_id"], end["session"]["status"]) == (r.cfg.session_id, "error"), end


async def test_within_limits_succeeds(js, nats_url, tmp_path) -> None:
    r = await start_runner(tmp_path, nats_url, config(NOTES, limits={"max_steps": 6}))
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    statuses = [e["data"]["status"] for _, e in events if e["type"] == "run.status"]
    assert statuses == ["running", "succeeded"], statuses  # the first one came through the fast path, once


# The runner's own process limits (the worker sets them; here they are set the same way), reached
# because of what a hostile model sends: the run ends failed with the limit named, never a traceback.


def _model(url: str) -> dict:
    return {"provider": "openai", "model": "gpt-4o-mini", "base_url": f"{url}/v1"}


def _note_call(n: int) -> dict:
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": f"call_{n}",
                            "type": "function",
                            "function": {"name": "note", "arguments": json.dumps({"message": "again"})},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


async def test_cpu_time_limit_stops_the_run_at_a_step(js, nats_url, tmp_path, llm_server) -> None:
    """A model that never stops calling tools burns the runner's CPU: at the soft limit the run ends
    at its next step, cleanly, before the hard limit would kill it."""
    reply = _note_call(1)
    llm_server.otherwise = Reply(headers={"content-type": "application/json"}, body=json.dumps(reply).encode())
    cfg = config("", llm=_model(llm_server.url), limits={"max_steps": 1_000_000, "max_tokens": 10**12})
    r = await start_runner(tmp_path, nats_url, cfg, rlimits={resource.RLIMIT_CPU: 2})
    assert await r.exit_code() == 0, r.log()  # ended by itself, not by SIGKILL at the hard limit
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "failed" and end["reason"] == "CPU time limit of 2 s reached", end
    assert changes(events, "note")  # the work before the limit is recorded
    assert "Traceback" not in r.log()
    assert "permissions violation" not in r.log()  # its kernel's inbox is its own to subscribe to


async def test_memory_limit_names_the_limit(js, nats_url, tmp_path, llm_server) -> None:
    """A model reply larger than the runner's memory: the runner ends the run naming its memory limit."""
    head = b'{"id":"chatcmpl-x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"'
    endless = itertools.chain([head], itertools.repeat(b"x" * (1 << 20), 4096))  # 4 GiB, produced as it is sent
    llm_server.replies.append(Reply(headers={"content-type": "application/json"}, pieces=endless))
    cfg = config("", llm=_model(llm_server.url))
    r = await start_runner(tmp_path, nats_url, cfg, rlimits={resource.RLIMIT_AS: 512 << 20})
    assert await r.exit_code() == 2, r.log()
    end = final_status(await read_events(js, r.cfg.run_id))
    assert end["status"] == "failed" and end["reason"] == "memory limit of 512 MiB reached", end
    assert len(llm_server.requests) == 1  # not asked again: the same reply would reach the limit again


def test_open_files_limit_is_named() -> None:
    """EMFILE, wherever it is raised and however it is wrapped, is the open-files limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = []
    said = None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        try:
            while True:
                held.append(open(os.devnull))  # noqa: SIM115 — held open on purpose
        except OSError as exhausted:
            try:
                raise RuntimeError("while connecting") from exhausted
            except RuntimeError as wrapped:
                said = ProcessLimits().describe(wrapped)
    finally:
        for f in held:
            f.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert said == "open-files limit of 64 reached"
    assert ProcessLimits().describe(ValueError("x")) is None


async def test_budget_stops_the_run_before_the_call_that_could_pass_it(js, nats_url, tmp_path) -> None:
    # Each call is priced at 1000 USD per 1M tokens, about 1 USD a call here: a budget of 3 USD
    # lets a call or two through, and the run stops before the one whose estimate passes it.
    r = await start_runner(tmp_path, nats_url, config(NOTES, budget={"usd": 3.0}, price=[1000.0, 1000.0]))
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "failed" and end["reason"] == "budget_exceeded", end
    calls = [e["data"] for _, e in events if e["type"] == "run.llm"]
    spent = sum(c["cost_usd"] for c in calls)
    assert calls and spent <= 3.0 and end["usage"]["cost_usd"] == pytest.approx(spent, abs=1e-6), (calls, end)
    assert all(
        c["cost_usd"] == pytest.approx((c["input_tokens"] + c["output_tokens"]) / 1000) for c in calls
    )  # the config's price
    assert len(changes(events, "note")) == len(calls) < 5  # stopped before the rest of the work
    logs = [e["data"]["message"] for _, e in events if e["type"] == "run.log"]
    assert any(m.startswith("budget exceeded before step") for m in logs), logs


async def test_token_budget_and_an_ample_one(js, nats_url, tmp_path) -> None:
    r = await start_runner(tmp_path, nats_url, config(NOTES, budget={"tokens": 50}))
    assert await r.exit_code() == 0, r.log()
    end = final_status(await read_events(js, r.cfg.run_id))
    assert end["status"] == "failed" and end["reason"] == "budget_exceeded" and end["usage"]["input_tokens"] == 0, (
        end
    )  # no call at all
    r = await start_runner(
        tmp_path, nats_url, config(NOTES, budget={"tokens": 1_000_000, "usd": 100.0}, price=[1.0, 1.0])
    )
    assert await r.exit_code() == 0, r.log()
    assert final_status(await read_events(js, r.cfg.run_id))["status"] == "succeeded"


async def test_ledger_limit(js, nats_url, tmp_path) -> None:
    """A run's agent records at most NEXUS_LEDGER_MAX_CHANGES changes: each is an event, a database record
    and a line of the API's answers. Past it the run fails with its reason, what was recorded kept."""
    r = await start_runner(tmp_path, nats_url, config(NOTES), env={"NEXUS_LEDGER_MAX_CHANGES": "2"})
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "failed" and end["reason"] == "ledger limit of 2 changes reached", end
    assert [c["message"] for c in changes(events, "note")] == ["step 1", "step 2"]
    assert end["ledger_hash"] == changes(events)[-1]["hash"], end  # the chain ends where the events do


async def test_ledger_limit_binds_an_external_cli(js, nats_url, tmp_path) -> None:
    from tests.agent_runner.test_runner_external import external

    steps = [{"tool": "note", "arguments": {"message": f"step {i}"}} for i in range(1, 50)]
    r = await start_runner(tmp_path, nats_url, external(steps), env={"NEXUS_LEDGER_MAX_CHANGES": "3"})
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "failed" and end["reason"] == "ledger limit of 3 changes reached", end
    assert [c["message"] for c in changes(events, "note")] == ["step 1", "step 2", "step 3"]

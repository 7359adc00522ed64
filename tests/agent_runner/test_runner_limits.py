"""The agent's limits end the run with a clear reason: steps, tokens, wall clock. The runner runs
as its own process against the real NATS; what a user sees is its final run.status."""

import pytest

from tests.agent_runner.test_runner_support import changes, config, final_status, js, read_events, start_runner  # noqa: F401

pytestmark = pytest.mark.infra

NOTES = "steps:\n" + "".join(f"  - tool_calls: [{{name: note, args: {{message: 'step {i}'}}}}]\n" for i in range(1, 6)) + "  - say: done\n"


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


async def test_within_limits_succeeds(js, nats_url, tmp_path) -> None:
    r = await start_runner(tmp_path, nats_url, config(NOTES, limits={"max_steps": 6}))
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    statuses = [e["data"]["status"] for _, e in events if e["type"] == "run.status"]
    assert statuses == ["running", "succeeded"], statuses  # the first one came through the fast path, once

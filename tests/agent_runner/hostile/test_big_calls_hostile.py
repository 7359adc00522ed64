"""Tool calls as large as a model can make them, through the real runner and real NATS: each must
end in a refusal or a recorded change, the run ending by itself — never a change too large for the
bus, a crash or a lost event."""

import json

import pytest

from tests.agent_runner.test_runner_support import changes, config, final_status, js, read_events, start_runner  # noqa: F401 — fixtures and helpers, used by name

pytestmark = pytest.mark.infra

BIG = 1_500_000  # past NATS's default 1 MiB message limit


async def test_calls_larger_than_a_bus_message_are_refused_or_cut(js, nats_url, tmp_path) -> None:
    steps = [
        {"tool_calls": [{"name": "run_command", "args": {"cmd": "true " + "a " * (BIG // 2)}}]},
        {"tool_calls": [{"name": "request_approval", "args": {"action": "x" * BIG, "detail": "y" * BIG}}]},
        {"tool_calls": [{"name": "spawn_child", "args": {"title": "t" * BIG}}]},
        {"tool_calls": [{"name": "note", "args": {"message": "n" * BIG}}]},
        {"tool_calls": [{"name": "git_commit", "args": {"message": "m" * BIG}}]},
        {"tool_calls": [{"name": "write_file", "args": {"path": "p/" * (BIG // 2), "content": "x"}}]},
        {"tool_calls": [{"name": "note", "args": {"message": "still here"}}]},
        {"tool_calls": [{"name": "finish", "args": {"summary": "done"}}]},
    ]
    cfg = config(
        json.dumps({"steps": steps}),
        permissions={"commands": {"allow": ["true *"], "default": "deny"}},
        limits={"max_steps": 10, "max_tokens": 10**12},
    )
    r = await start_runner(tmp_path, nats_url, cfg)
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, r.cfg.run_id)
    end = final_status(events)
    assert end["status"] == "succeeded", end
    assert [c["message"] for c in changes(events, "note")][0] == "still here"
    refused = [(c["tool"], c["reason"]) for c in changes(events, "refused")]
    assert refused == [
        ("run_command", "invalid-arguments"),
        ("request_approval", "invalid-arguments"),
        ("spawn_child", "invalid-arguments"),
        ("note", "too-large"),
        ("git_commit", "invalid-arguments"),
        ("write_file", "invalid-arguments"),
    ], refused
    assert all(len(json.dumps(e)) < 200_000 for e in events)

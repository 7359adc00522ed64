"""The run's life (`lifecycle.run`) played inside the test's own process against the real NATS, as the
zygote's rehearsal plays it: each way a run ends gives its exit code, its verdict, the session's end
riding on it, and leaves the process's signal dispositions as it found them (a zygote that rehearsed a
run, or a test, goes on with its own); and what the model is first told. The same ends as a separate
process: test_runner_limits.py, test_runner_external.py. Here the coverage run measures the run's life,
which otherwise runs only in runner processes (cold, or forked from the zygote process)."""

import asyncio
import json
import logging
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nexus.agent_runner import lifecycle, prompt
from nexus.agent_runner.settings import RunnerSettings
from nexus.domain.settings import load_settings
from nexus.events.payloads import RunConfig
from tests.agent_runner.llm.conftest import Reply, llm_server  # noqa: F401 — a fixture
from tests.agent_runner.test_runner_support import config, final_status, js, read_events, run_environ  # noqa: F401 — a fixture and helpers

pytestmark = pytest.mark.infra

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGXCPU)
SECRET = "hunter2-do-not-leak"


@pytest.fixture(autouse=True)
def process_state() -> Iterator[None]:
    """What the run may change in this process, taken back after the test: a run masks the log handlers
    it finds (its process ends with it), here pytest's own."""
    handlers = logging.getLogger().handlers
    filters = [list(h.filters) for h in handlers]
    yield
    for handler, kept in zip(handlers, filters, strict=False):
        handler.filters[:] = kept


def dispositions() -> list[object]:
    return [signal.getsignal(s) for s in SIGNALS]


async def play(tmp: Path, nats_url: str, cfg: RunConfig, *, announced: bool = False, **extra: str) -> int:
    """The run's life in a task of its own (a cancel cancels the task the run is in), checked to leave the
    process's signal handlers as they were."""
    environ = run_environ(tmp, nats_url, cfg, env={"NEXUS_SANDBOX": "none", **extra})
    before = dispositions()
    code = await asyncio.create_task(
        lifecycle.run(load_settings(RunnerSettings, environ), environ, announced=announced)
    )
    assert dispositions() == before, "the run left its signal handlers in the process"
    return code


def statuses(events: list[tuple[str, dict]]) -> list[str]:
    return [e["data"]["status"] for _, e in events if e["type"] == "run.status"]


@pytest.mark.parametrize("announced", [False, True])
async def test_a_run_that_finishes_succeeds_and_ends_its_session(js, nats_url, tmp_path, announced) -> None:
    cfg = config("steps:\n  - say: done\n")
    assert await play(tmp_path, nats_url, cfg, announced=announced) == 0
    events = await read_events(js, cfg.run_id)
    # A run already announced (main's first event) does not say "running" again.
    assert statuses(events) == (["succeeded"] if announced else ["running", "succeeded"])
    end = final_status(events)
    assert end["session"]["session_id"] == cfg.session_id and end["session"]["status"] == "completed", end


async def test_a_run_that_cannot_start_its_agent_fails_with_the_reason_masked(js, nats_url, tmp_path, caplog) -> None:
    """A failure ends the run with its reason (exit code 2); a secret in it is masked in the verdict and in
    the log line, traceback included."""
    cfg = config(f"steps:\n  - {SECRET}: 1\n", secrets=["API_TOKEN"])
    with caplog.at_level(logging.INFO, logger="nexus.agent_runner"):
        assert await play(tmp_path, nats_url, cfg, NEXUS_SECRET_API_TOKEN=SECRET) == 2
    end = final_status(await read_events(js, cfg.run_id))
    assert end["status"] == "failed" and end["reason"].startswith("LLMConfigError: invalid script: steps[0]"), end
    assert SECRET not in end["reason"], end
    (failed,) = [r for r in caplog.records if r.getMessage() == f"run {cfg.run_id} failed"]
    assert failed.exc_info is None and "LLMConfigError" in (failed.exc_text or ""), "no traceback logged"
    assert SECRET not in failed.exc_text and SECRET not in caplog.text


SLEEP = "steps:\n  - tool_calls: [{{name: run_command, args: {{cmd: 'sleep {seconds}'}}}}]\n  - say: never\n"


def sleeping(seconds: str, **fields) -> RunConfig:
    return config(SLEEP.format(seconds=seconds), permissions={"commands": {"allow": ["sleep *"]}}, **fields)


async def test_a_run_past_its_wall_clock_times_out(js, nats_url, tmp_path) -> None:
    cfg = sleeping("60", limits={"wall_clock_s": 1})
    assert await play(tmp_path, nats_url, cfg) == 3
    end = final_status(await read_events(js, cfg.run_id))
    assert end["status"] == "timed_out" and end["reason"] == "wall-clock limit of 1s exceeded", end
    assert end["session"]["status"] == "error", end


def _running(marker: str) -> bool:
    return subprocess.run(["pgrep", "-f", marker], capture_output=True, check=False).returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_cancels_the_run(js, nats_url, tmp_path, sig) -> None:
    """SIGTERM or SIGINT to the run's process, while its command runs: the run says it was cancelled
    (exit code 4) and its session ends as an error; this process then has its own handlers back."""
    marker = f"{300 + uuid.uuid4().int % 10**6 / 10**6:.6f}"  # the command's own, by its command line
    cfg = sleeping(marker)
    run = asyncio.create_task(play(tmp_path, nats_url, cfg))
    for _ in range(300):  # a bounded wait: the handlers are in from before the session, the command runs
        if run.done() or _running(f"sleep {marker}"):
            break
        await asyncio.sleep(0.1)
    assert not run.done() and _running(f"sleep {marker}"), "the run's command never started"
    os.kill(os.getpid(), sig)
    assert await asyncio.wait_for(run, 60) == 4
    end = final_status(await read_events(js, cfg.run_id))
    assert end["status"] == "cancelled" and end["reason"] == "the run was cancelled", end
    assert end["session"]["status"] == "error", end


ANSWER = {
    "id": "chatcmpl-x",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "done"}}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
}


@pytest.mark.parametrize("with_task", [True, False])
async def test_the_model_is_first_told_its_prompt_skills_memory_and_task(
    js, nats_url, tmp_path, llm_server, with_task
) -> None:
    """What the model hears first (over the provider's real wire): the agent's prompt, the tool rules, each
    skill numbered, what it remembers, then the task with its target files (or, without one, to do it)."""
    llm_server.otherwise = Reply(headers={"content-type": "application/json"}, body=json.dumps(ANSWER).encode())
    task = {"title": "Fix the parser", "description": "It drops the last line.", "target_files": ["a.py", "b.py"]}
    cfg = config(
        "",
        llm={"provider": "openai", "model": "gpt-4o-mini", "base_url": f"{llm_server.url}/v1"},
        system_prompt="  You are careful.\n",
        skills=["Read before you write.\n", "Run the tests."],
        memory=[" The tests live in tests/.", "CI is slow."],
        task=task if with_task else None,
    )
    assert await play(tmp_path, nats_url, cfg) == 0
    assert final_status(await read_events(js, cfg.run_id))["status"] == "succeeded"
    system, user = llm_server.requests[0].json["messages"][:2]
    assert (system["role"], user["role"]) == ("system", "user")
    assert system["content"] == (
        f"You are careful.\n\n{prompt.TOOL_RULES}\n\n## Skill 1\nRead before you write.\n\n## Skill 2\nRun the tests."
        "\n\n## What you remember\n- The tests live in tests/.\n- CI is slow."
    )
    assert user["content"] == (
        "# Task: Fix the parser\n\nIt drops the last line.\n\nTarget files: a.py, b.py"
        if with_task
        else "Do the task you were given."
    )

"""What an operator relies on, through every long-running service as a real process: a live run
cancelled over the API stops (its commands too), the per-agent slot cap holds runs back, and every
service's ops port answers /healthz, /readyz and /metrics with counters that move after a run, and a
run past the worker's CPU limit for runners ends failed with that limit as its reason."""

import asyncio
import json
import re
import subprocess
import uuid

import httpx
import pytest

from tests.agent_runner.llm.conftest import Reply, llm_server  # noqa: F401 — a fixture
from tests.e2e.conftest import running_stack, wait_for
from tests.e2e.test_first_run import read_sse

pytestmark = [pytest.mark.e2e, pytest.mark.infra]

FINAL = ("succeeded", "failed", "cancelled", "timed_out")


def _sleeper(seconds: str) -> str:
    return f"""
steps:
  - tool_calls: [{{name: run_command, args: {{cmd: "sleep {seconds}"}}}}]
  - say: done
"""


async def _agent(api: httpx.AsyncClient, name: str, script: str) -> None:
    r = await api.post(
        "/v1/agents",
        json={
            "name": name,
            "system_prompt": "test",
            "tools": ["run_command", "finish"],
            "permissions": {"commands": {"allow": ["sleep *"], "default": "deny"}},
            "llm": {"provider": "scripted", "script": script},
        },
    )
    assert r.status_code == 201, r.text


async def _run_of_new_task(api: httpx.AsyncClient, agent: str) -> str:
    r = await api.post("/v1/tasks", json={"title": f"t-{uuid.uuid4().hex[:6]}", "assignee": agent})
    assert r.status_code == 201, r.text
    return r.json()["current_run_id"]


def _processes_with(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


async def _until(predicate, attempts: int = 600) -> None:
    for _ in range(attempts):  # a bound on checks, not a timed assertion
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the condition never held")


async def test_cancelling_a_live_run_stops_it_and_its_command(tmp_path, nats_url, mongo_url) -> None:
    marker = f"3599.{uuid.uuid4().int % 10**6:06d}"  # a sleep nobody else runs
    with running_stack(tmp_path, nats_url, mongo_url, services=["core-api", "worker"]) as stack:
        async with httpx.AsyncClient(
            base_url=stack.api_url, timeout=30, headers={"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"}
        ) as api:
            await _agent(api, "sleeper", _sleeper(marker))
            run_id = await _run_of_new_task(api, "sleeper")
            await _until(lambda: _processes_with(f"sleep {marker}"))  # the command is running
            r = await api.post(f"/v1/runs/{run_id}/cancel", json={"reason": "operator stop"})
            assert r.status_code == 201, r.text
            run = await wait_for(api, f"/v1/runs/{run_id}", lambda b: b["status"] in FINAL)
            assert run["status"] == "cancelled"
            await _until(lambda: not _processes_with(f"sleep {marker}"))  # the whole tree is gone
            task = (await api.get(f"/v1/tasks/{run['task_id']}")).json()
            assert task["status"] == "cancelled"


async def test_the_per_agent_cap_holds_the_second_run_until_the_first_exits(tmp_path, nats_url, mongo_url) -> None:
    env = {"NEXUS_MAX_RUNS_PER_AGENT": "1"}
    with running_stack(tmp_path, nats_url, mongo_url, env=env, services=["core-api", "worker"]) as stack:
        async with httpx.AsyncClient(
            base_url=stack.api_url, timeout=30, headers={"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"}
        ) as api:
            await _agent(api, "capped", _sleeper("0.5"))
            runs = [await _run_of_new_task(api, "capped") for _ in range(2)]
            for run_id in runs:
                run = await wait_for(api, f"/v1/runs/{run_id}", lambda b: b["status"] in FINAL)
                assert run["status"] == "succeeded", run
            # Event ids are the run stream's sequence: one order across both runs.
            runtime = {}
            for run_id in runs:
                for e in await read_sse(api, f"/v1/runs/{run_id}/events"):
                    if e["event"] == "run.runtime":
                        state = re.search(r"\"phase\":\s*\"(\w+)\"", e["data"])
                        runtime.setdefault(run_id, {})[state.group(1) if state else "?"] = int(e["id"])
            first, second = sorted(runs, key=lambda r: runtime[r]["launched"])
            assert runtime[second]["launched"] > runtime[first]["exited"], runtime


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            if line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
    return total


async def test_ops_ports_answer_and_counters_move_after_a_run(tmp_path, nats_url, mongo_url) -> None:
    with running_stack(tmp_path, nats_url, mongo_url) as stack:
        ports = stack.metrics_ports
        async with (
            httpx.AsyncClient(timeout=30) as ops,
            httpx.AsyncClient(
                base_url=stack.api_url, timeout=30, headers={"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"}
            ) as api,
        ):
            for name in stack.procs:
                base = f"http://127.0.0.1:{ports[name]}"
                await _until_ok(ops, f"{base}/readyz")
                assert (await ops.get(f"{base}/healthz")).status_code == 200, name
                metrics = await ops.get(f"{base}/metrics")
                assert metrics.status_code == 200 and "# TYPE" in metrics.text, name
            core = f"http://127.0.0.1:{ports['core-api']}/metrics"
            worker = f"http://127.0.0.1:{ports['worker']}/metrics"
            before_core, before_worker = (await ops.get(core)).text, (await ops.get(worker)).text

            await _agent(api, "quick", "steps:\n  - say: done\n")
            run_id = await _run_of_new_task(api, "quick")
            run = await wait_for(api, f"/v1/runs/{run_id}", lambda b: b["status"] in FINAL)
            assert run["status"] == "succeeded"

            after_core, after_worker = (await ops.get(core)).text, (await ops.get(worker)).text
            assert (
                _metric(after_core, "nexus_runs_total", status="succeeded")
                == _metric(before_core, "nexus_runs_total", status="succeeded") + 1
            )
            assert _metric(after_core, "nexus_consumer_messages_total") > _metric(
                before_core, "nexus_consumer_messages_total"
            )
            assert (
                _metric(after_core, "nexus_dispatch_latency_seconds_count")
                == _metric(before_core, "nexus_dispatch_latency_seconds_count") + 1
            )  # ready → the runner's first event
            assert _metric(after_worker, "nexus_launch_duration_seconds_count") > _metric(
                before_worker, "nexus_launch_duration_seconds_count"
            )
            assert "nexus_runs_total" not in after_worker  # final states are core-api's to count, once


async def _until_ok(client: httpx.AsyncClient, url: str) -> None:
    for _ in range(300):
        try:
            if (await client.get(url)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered 200")


async def test_a_run_past_its_cpu_limit_is_stopped_with_the_reason(tmp_path, nats_url, mongo_url, llm_server) -> None:
    """The worker's runner limits hold through the real stack: a model that keeps the runner busy
    forever ends in a failed run whose reason names the CPU limit, as the API shows it."""
    reply = {
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
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "note", "arguments": '{"message": "again"}'},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    llm_server.otherwise = Reply(headers={"content-type": "application/json"}, body=json.dumps(reply).encode())
    env = {"NEXUS_RUN_CPU_SECONDS": "2"}
    with running_stack(tmp_path, nats_url, mongo_url, env=env, services=["core-api", "worker"]) as stack:
        async with httpx.AsyncClient(
            base_url=stack.api_url, timeout=30, headers={"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"}
        ) as api:
            r = await api.post(
                "/v1/agents",
                json={
                    "name": "busy",
                    "system_prompt": "test",
                    "tools": ["note", "finish"],
                    "limits": {"max_steps": 1_000_000, "max_tokens": 10**12},
                    "llm": {"provider": "openai", "model": "gpt-4o-mini", "base_url": f"{llm_server.url}/v1"},
                },
            )
            assert r.status_code == 201, r.text
            run_id = await _run_of_new_task(api, "busy")
            run = await wait_for(api, f"/v1/runs/{run_id}", lambda b: b["status"] in FINAL, attempts=1200)
            assert run["status"] == "failed", run
            assert "CPU time limit of 2 s reached" in run["reason"], run

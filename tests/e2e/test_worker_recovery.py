"""A worker killed with SIGKILL at any point of a run, then started again, leaves every run in a
final state (or still correctly running, and then finishing). core-api and the worker run as real
processes; the worker is killed at: after claiming a launch but before starting it; while the
runner runs; and after the runner ended (well, or killed too) but before `exited` was reported."""

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyNotFoundError

from nexus.dev.stack import Stack
from nexus.events.bus import connect
from nexus.worker.launcher import LAUNCH_BUCKET, claim_key
from nexus.worker.runtimes.record import read_record
from tests.e2e.conftest import running_stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.infra]
FINAL = ("succeeded", "failed", "cancelled", "timed_out")


@pytest.fixture
def stack(tmp_path: Path, nats_url: str, mongo_url: str, nats_auth: Path | None) -> Iterator[Stack]:
    env = {"NEXUS_HEARTBEAT_TIMEOUT_S": "3", "NEXUS_SWEEP_INTERVAL_S": "0.5", "NEXUS_RUNNER_HEARTBEAT_S": "0.5"}
    with running_stack(
        tmp_path, nats_url, mongo_url, services=["core-api", "worker"], env=env, nats_auth=nats_auth
    ) as s:
        yield s


def script(sleep_s: int) -> str:
    return f'steps:\n  - tool_calls:\n      - name: run_command\n        args: {{cmd: "sleep {sleep_s}"}}\n  - say: "slept"\n'


async def start_run(api: httpx.AsyncClient, name: str, sleep_s: int) -> dict:
    r = await api.post(
        "/v1/agents",
        json={
            "name": name,
            "system_prompt": "You wait.",
            "tools": ["run_command", "note"],
            "permissions": {"can_commit": False, "commands": {"allow": ["sleep *"], "default": "deny"}},
            "llm": {"provider": "scripted", "script": script(sleep_s)},
        },
    )
    assert r.status_code == 201, r.text
    r = await api.post("/v1/tasks", json={"title": f"{name} task", "assignee": name})
    assert r.status_code == 201, r.text
    return r.json()


async def final_run(api: httpx.AsyncClient, run_id: str) -> dict:
    return await wait_for(api, f"/v1/runs/{run_id}", lambda r: r["status"] in FINAL, attempts=900)


def runner_pid(stack: Stack, run_id: str) -> int:
    record = read_record(stack.run_files / run_id)
    assert record is not None, f"run {run_id} has no runner recorded"
    return record.pid


async def runtime_phases(stack: Stack, run_id: str) -> list[str]:
    """The worker's `run.runtime` events for the run, read back from the run's event stream."""
    nc = await connect(stack.nats_url or "", "e2e-recovery", creds=stack.creds("tools"))
    phases = []
    try:
        sub = await nc.jetstream().subscribe(f"nexus.run.{run_id}.runtime", ordered_consumer=True)
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except TimeoutError:
                break
            phases.append(json.loads(msg.data)["data"]["phase"])
    finally:
        await nc.drain()
    return phases


def restart_worker(stack: Stack, **env: str) -> None:
    stack.stop_service("worker", signal.SIGKILL)
    for k in [k for k in stack.env if k.startswith("NEXUS_FAULT_")]:
        del stack.env[k]
    stack.env.update(env)
    stack.start_service("worker")


async def test_killed_after_claim_before_launch(stack: Stack, api: httpx.AsyncClient) -> None:
    restart_worker(stack, NEXUS_FAULT_PAUSE_AFTER_CLAIM_S="60")  # this worker will stall right after claiming
    task = await start_run(api, "claimer", 1)
    run_id = task["current_run_id"]
    nc = await connect(stack.nats_url or "", "e2e-recovery", creds=stack.creds("tools"))
    try:
        kv = await nc.jetstream().create_key_value(KeyValueConfig(bucket=LAUNCH_BUCKET, ttl=7 * 86400, history=1))
        for _ in range(300):
            try:
                claim = json.loads((await kv.get(claim_key(run_id, 1))).value)
                break
            except KeyNotFoundError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the worker never claimed the launch")
    finally:
        await nc.drain()
    assert claim["worker"]
    restart_worker(stack)  # SIGKILL with the claim taken and nothing started
    run = await final_run(api, run_id)
    assert run["status"] == "succeeded", run
    first, second = run["attempts"]
    assert first["status"] == "failed" and "claimed for launch but never started" in first["reason"]
    assert second["status"] == "succeeded"


async def test_killed_while_the_runner_runs(stack: Stack, api: httpx.AsyncClient) -> None:
    task = await start_run(api, "sleeper", 8)
    run_id = task["current_run_id"]
    await wait_for(api, f"/v1/runs/{run_id}", lambda r: r["status"] == "running", attempts=300)
    restart_worker(stack)  # the runner lives on; the new worker adopts it
    run = await final_run(api, run_id)
    assert run["status"] == "succeeded" and len(run["attempts"]) == 1, run
    for _ in range(100):  # "exited" comes from the worker that adopted the runner, after the final status
        if "exited" in await runtime_phases(stack, run_id):
            break
        await asyncio.sleep(0.1)
    assert (await runtime_phases(stack, run_id)).count("launched") == 1
    assert "exited" in await runtime_phases(stack, run_id)
    log = (stack.log_dir / "worker.log").read_text()  # type: ignore[operator]  # this stack logs to files
    assert f"adopting run {run_id}" in log


async def test_killed_while_no_worker_sees_the_runner_end(stack: Stack, api: httpx.AsyncClient) -> None:
    ends_well = await start_run(api, "finisher", 2)
    crashes = await start_run(api, "crasher", 2)
    ids = [ends_well["current_run_id"], crashes["current_run_id"]]
    for run_id in ids:
        await wait_for(api, f"/v1/runs/{run_id}", lambda r: r["status"] == "running", attempts=300)
    stack.stop_service("worker", signal.SIGKILL)
    os.killpg(runner_pid(stack, ids[1]), signal.SIGKILL)  # this runner dies without a word
    await final_run(api, ids[0])  # the other reports its own end while no worker runs
    stack.start_service("worker")
    good, retried = [await final_run(api, run_id) for run_id in ids]
    assert good["status"] == "succeeded" and len(good["attempts"]) == 1, good
    assert retried["status"] == "succeeded", retried
    first, second = retried["attempts"]
    assert first["status"] == "failed" and "lost: no heartbeat" in first["reason"]
    assert second["status"] == "succeeded"

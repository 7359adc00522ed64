"""One run is one trace: every process (core-api, worker, the runner it starts) exports its spans over OTLP/HTTP
to a receiver this test runs, and the spans of one run — from the HTTP request that dispatched it to core-api
storing its final status — share one trace id, the model and tool calls inside it. A run a schedule starts is rooted at the worker firing
the occurrence, and a run a chat command starts (a goal's meta session, through a local fake of Telegram's Bot
API) at the gateway handling the command: each such trace reaches the runner and comes back to core-api."""

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nexus.dev.otlp import OtlpReceiver, ReceivedSpan
from tests.e2e.conftest import running_stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.infra]

SCRIPT = """
steps:
  - say: "I will leave a note, then look outside my workspace."
    tool_calls:
      - name: note
        args: {message: "tracing {{run_id}}"}
  - tool_calls:
      - name: read_file
        args: {path: "../../outside.txt"}
  - say: "Done."
"""


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start()
    yield r
    r.stop()


def run_trace(spans: list[ReceivedSpan], run_id: str) -> list[ReceivedSpan]:
    """Every span of the trace the runner's session belongs to."""
    sessions = [s for s in spans if s.name == "invoke_agent" and s.attributes.get("nexus.run_id") == run_id]
    return [s for s in spans if sessions and s.trace_id == sessions[0].trace_id]


def roots(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    ids = {s.span_id for s in spans}
    return [s for s in spans if s.parent_span_id not in ids]


def final_status(spans: list[ReceivedSpan], run_id: str) -> list[ReceivedSpan]:
    """core-api applying the run's final status to the run (ingestion's last step) in the run's trace."""
    return [
        s
        for s in run_trace(spans, run_id)
        if s.service == "core-api"
        and s.name == "apply run.status"
        and s.attributes.get("nexus.run.status") == "succeeded"
    ]


async def test_one_run_is_one_trace_across_processes(
    tmp_path: Path, nats_url: str, mongo_url: str, nats_auth, receiver
) -> None:
    with running_stack(
        tmp_path,
        nats_url,
        mongo_url,
        nats_auth=nats_auth,
        services=["core-api", "worker"],
        env={"NEXUS_OTLP_ENDPOINT": receiver.endpoint},
    ) as stack:
        async with httpx.AsyncClient(
            base_url=stack.api_url, timeout=30, headers={"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"}
        ) as api:
            name = f"tracer-{uuid.uuid4().hex[:6]}"
            r = await api.post(
                "/v1/agents",
                json={
                    "name": name,
                    "system_prompt": "You trace.",
                    "tools": ["note", "read_file"],
                    "llm": {"provider": "scripted", "script": SCRIPT},
                },
            )
            assert r.status_code == 201, r.text
            r = await api.post("/v1/tasks", json={"title": "Be traced", "assignee": name})
            assert r.status_code == 201, r.text
            run_id = r.json()["current_run_id"]
            run = await wait_for(
                api, f"/v1/runs/{run_id}", lambda b: b["status"] in ("succeeded", "failed", "timed_out")
            )
            assert run["status"] == "succeeded", run

        # Each process exports in its own batches: wait until the final status is in and every span's parent too.
        runner_log = (stack.run_files / run_id / "attempt-1" / "runner.log").read_text()
        try:
            spans = run_trace(
                receiver.wait_for(
                    lambda got: bool(final_status(got, run_id)) and len(roots(run_trace(got, run_id))) == 1
                ),
                run_id,
            )
        except TimeoutError:
            spans = run_trace(receiver.spans, run_id)
            raise AssertionError(
                f"final status: {final_status(spans, run_id)}; spans without their parent: {roots(spans)}"
            ) from None

    by_id = {s.span_id: s for s in spans}
    services = {s.service for s in spans}
    assert {"core-api", "worker", "agent-runner"} <= services, services

    # It starts at the HTTP request that created the task: litestar's server span is the root.
    (root,) = roots(spans)
    assert (root.service, root.kind, root.name) == ("core-api", "server", "POST /v1/tasks")

    # core-api commands the launch (producer) → the worker handles it (consumer) and launches → the runner's
    # session is the child of that launch, through TRACEPARENT.
    (launch_cmd,) = [
        s
        for s in spans
        if s.kind == "producer" and s.attributes["messaging.destination.name"] == "nexus.cmd.worker.launch_run"
    ]
    assert launch_cmd.service == "core-api" and launch_cmd.attributes["messaging.system"] == "nats"
    (intake,) = [s for s in spans if s.kind == "consumer" and s.parent_span_id == launch_cmd.span_id]
    assert intake.service == "worker" and intake.attributes["messaging.consumer.group.name"] == "worker-launch"
    (launch,) = [s for s in spans if s.name == "launch run"]
    assert (
        launch.service == "worker"
        and launch.attributes["nexus.run_id"] == run_id
        and launch.parent_span_id == intake.span_id
    )
    (session,) = [s for s in spans if s.name == "invoke_agent"]
    assert session.service == "agent-runner" and session.parent_span_id == launch.span_id

    # Model calls with GenAI attributes, tool calls with their outcome, all inside the session.
    def inside(s: ReceivedSpan) -> bool:
        while s.parent_span_id in by_id:
            if s.parent_span_id == session.span_id:
                return True
            s = by_id[s.parent_span_id]
        return False

    chats = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]
    assert len(chats) == 3 and all(inside(c) and c.kind == "client" for c in chats)
    assert all(
        c.attributes["gen_ai.provider.name"] == "scripted"
        and c.attributes["gen_ai.usage.input_tokens"] > 0
        and "gen_ai.usage.output_tokens" in c.attributes
        and "nexus.llm.cost_usd" in c.attributes
        for c in chats
    )
    tools = {
        s.attributes["gen_ai.tool.name"]: s
        for s in spans
        if s.attributes.get("gen_ai.operation.name") == "execute_tool"
    }
    assert {"note", "read_file"} <= set(tools) and all(inside(t) for t in tools.values())
    assert (
        tools["note"].attributes["nexus.tool.outcome"] == "ok"
        and tools["note"].attributes["nexus.tool.refused"] is False
    )
    assert (
        tools["read_file"].attributes["nexus.tool.outcome"] == "refused"
        and tools["read_file"].attributes["nexus.tool.refused"] is True
    )

    # The runner's final status reaches core-api in the same trace: published inside the session, applied by
    # core-api's ingestion under the consumer span that continues it.
    consumers = [by_id[final.parent_span_id] for final in final_status(spans, run_id)]
    assert all(
        c.service == "core-api" and c.kind == "consumer" and c.attributes["messaging.system"] == "nats"
        for c in consumers
    )
    assert any(inside(c) for c in consumers), consumers  # the runner's own report of it

    # The runner's log lines (text under the local stack, as the worker's) carry the run and its trace.
    session_lines = [line for line in runner_log.splitlines() if "commands are confined by" in line]
    assert session_lines and all(
        f"run_id={run_id} trace_id={session.trace_id} span_id=" in line for line in session_lines
    ), runner_log


# ---------------------------------------------------------------- the other roots: a schedule, a chat command

PLAIN = 'steps:\n  - tool_calls: [{name: note, args: {message: "rooted"}}]\n  - say: "done"\n'
LEAD = 1001


def through_the_runner(spans: list[ReceivedSpan], run_id: str) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    """The one root of the run's trace and the trace, once it holds the runner's session and core-api applying
    the run's final status, every span with its parent (each process exports in its own batches)."""
    trace = run_trace(spans, run_id)
    (root,) = roots(trace)
    services = {s.service for s in trace}
    assert {"core-api", "worker", "agent-runner"} <= services, services
    (launch,) = [s for s in trace if s.name == "launch run"]
    (session,) = [s for s in trace if s.name == "invoke_agent"]
    assert launch.attributes["nexus.run_id"] == run_id and session.parent_span_id == launch.span_id
    assert final_status(spans, run_id), "core-api's final status is not in the run's trace"
    return root, trace


async def succeeded_and_traced(
    api: httpx.AsyncClient, receiver: OtlpReceiver, run_id: str
) -> tuple[str, list[ReceivedSpan]]:
    """Once the run succeeded: the spans, when its trace holds core-api's final status and every span's parent —
    down to a true root (no parent at all: a span whose parent's process has not exported yet looks like one)."""
    run = await wait_for(api, f"/v1/runs/{run_id}", lambda b: b["status"] in ("succeeded", "failed", "timed_out"))
    assert run["status"] == "succeeded", run

    def complete(got: list[ReceivedSpan]) -> bool:
        top = roots(run_trace(got, run_id))
        return bool(final_status(got, run_id)) and len(top) == 1 and not top[0].parent_span_id

    try:
        return run_id, receiver.wait_for(complete)
    except TimeoutError:
        raise AssertionError(f"spans without their parent: {roots(run_trace(receiver.spans, run_id))}") from None


async def dispatched(api: httpx.AsyncClient, task_id: str, attempts: int = 600) -> dict:
    """The task once it exists and has its run (a bounded count of polls, not a time)."""
    for _ in range(attempts):
        r = await api.get(f"/v1/tasks/{task_id}")
        if r.status_code == 200 and r.json().get("current_run_id"):
            return r.json()
        assert r.status_code in (200, 404), r.text
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} was never dispatched")


async def test_a_schedule_firing_is_the_root_of_its_runs_trace(
    tmp_path: Path, nats_url: str, mongo_url: str, nats_auth, receiver
) -> None:
    env = {"NEXUS_OTLP_ENDPOINT": receiver.endpoint, "NEXUS_SCHEDULE_TICK_S": "0.5", "NEXUS_SCHEDULE_GRACE_S": "5"}
    with running_stack(
        tmp_path, nats_url, mongo_url, nats_auth=nats_auth, services=["core-api", "worker"], env=env
    ) as stack:
        async with httpx.AsyncClient(
            base_url=stack.api_url, timeout=30, headers={"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"}
        ) as api:
            name = f"timed-{uuid.uuid4().hex[:6]}"
            r = await api.post(
                "/v1/agents",
                json={
                    "name": name,
                    "system_prompt": "You run on time.",
                    "tools": ["note"],
                    "llm": {"provider": "scripted", "script": PLAIN},
                },
            )
            assert r.status_code == 201, r.text
            r = await api.post(
                "/v1/schedules",
                json={
                    "name": name,
                    "cron": "* * * * * */2",
                    "timezone": "UTC",
                    "overlap": "skip",
                    "task": {"title": f"on time {name}", "assignee": name},
                },
            )
            assert r.status_code == 201, r.text
            schedule = r.json()
            fired = await wait_for(
                api, f"/v1/schedules/{schedule['id']}", lambda s: s["fired_count"] >= 1 and s["active_item_id"]
            )
            assert (await api.delete(f"/v1/schedules/{schedule['id']}")).status_code == 204
            # The schedule names its occurrence before the task is stored and dispatched.
            task = await dispatched(api, fired["active_item_id"])
            run_id, spans = await succeeded_and_traced(api, receiver, task["current_run_id"])

    root, trace = through_the_runner(spans, run_id)
    assert (root.service, root.name) == ("worker", "fire schedule"), root
    assert root.attributes["nexus.schedule_id"] == schedule["id"] and root.attributes["nexus.fire_reason"] == "on_time"
    # The worker commands the occurrence (producer) → core-api fires it (consumer) → … → the launch.
    (fire_cmd,) = [s for s in trace if s.kind == "producer" and s.parent_span_id == root.span_id]
    assert fire_cmd.attributes["messaging.destination.name"] == "nexus.cmd.core.fire_schedule"
    assert any(s.service == "core-api" and s.kind == "consumer" and s.parent_span_id == fire_cmd.span_id for s in trace)


async def test_a_chat_command_is_the_root_of_what_it_starts(
    tmp_path: Path, nats_url: str, mongo_url: str, nats_auth, receiver, fake
) -> None:
    env = {
        "NEXUS_OTLP_ENDPOINT": receiver.endpoint,
        "NEXUS_TELEGRAM_TOKEN": fake.token,
        "NEXUS_TELEGRAM_API_URL": fake.base_url,
        "NEXUS_TELEGRAM_POLL_TIMEOUT_S": "1",
    }
    with running_stack(
        tmp_path, nats_url, mongo_url, nats_auth=nats_auth, services=["core-api", "worker", "telegram-gateway"], env=env
    ) as stack:
        async with httpx.AsyncClient(
            base_url=stack.api_url, timeout=30, headers={"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"}
        ) as api:
            r = await api.post(
                "/v1/chat-bindings", json={"user_id": str(LEAD), "identity": "lea@example.com", "role": "lead"}
            )
            assert r.status_code == 201, r.text
            planner = f"planner-{uuid.uuid4().hex[:6]}"
            script = 'steps:\n  - tool_calls: [{name: finish, args: {summary: "nothing to split"}}]\n'
            r = await api.post(
                "/v1/agents",
                json={
                    "name": planner,
                    "system_prompt": "You plan.",
                    "tools": ["finish", "note"],
                    "llm": {"provider": "scripted", "script": script},
                },
            )
            assert r.status_code == 201, r.text
            await fake.send_text(LEAD, f"/goal Be traced from chat with {planner}")
            created = await fake.wait_message(LEAD, "Goal <code>goal_")
            goal_id = re.search(r"goal_[0-9a-z]{26}", created["text"]).group(0)
            await wait_for(
                api, "/v1/goals", lambda page: any(g["id"] == goal_id for g in page["items"])
            )  # the command applied
            goal = await wait_for(api, f"/v1/goals/{goal_id}", lambda g: bool(g.get("meta_run_id")))
            run_id, spans = await succeeded_and_traced(api, receiver, goal["meta_run_id"])

    root, trace = through_the_runner(spans, run_id)
    assert (root.service, root.name) == ("telegram-gateway", "chat command goal"), root
    assert root.attributes["nexus.chat.command"] == "goal"
    assert not any("Be traced" in str(v) for s in trace for v in s.attributes.values())  # the arguments stay out
    (goal_cmd,) = [
        s
        for s in trace
        if s.kind == "producer" and s.attributes["messaging.destination.name"] == "nexus.cmd.core.create_goal"
    ]
    assert goal_cmd.service == "telegram-gateway"
    assert any(s.service == "core-api" and s.kind == "consumer" and s.parent_span_id == goal_cmd.span_id for s in trace)

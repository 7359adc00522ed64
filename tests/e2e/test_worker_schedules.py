"""Schedules through the API: validation naming the field, audit entries, and occurrences fired by
the worker's clock into tasks that run — one at a time under the `skip` overlap policy."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nexus.dev.stack import Stack
from tests.e2e.conftest import running_stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.infra]
SCRIPT = 'steps:\n  - tool_calls:\n      - name: run_command\n        args: {cmd: "sleep 2"}\n  - say: "pinged"\n'


@pytest.fixture
def stack(tmp_path: Path, nats_url: str, mongo_url: str, nats_auth: Path | None) -> Iterator[Stack]:
    env = {"NEXUS_SCHEDULE_TICK_S": "0.5", "NEXUS_SCHEDULE_GRACE_S": "5"}
    with running_stack(
        tmp_path, nats_url, mongo_url, services=["core-api", "worker"], env=env, nats_auth=nats_auth
    ) as s:
        yield s


def spec(**over) -> dict:
    return {
        "name": "ping",
        "cron": "* * * * * */2",
        "timezone": "Europe/Paris",
        "task": {"title": "Scheduled ping", "assignee": "pinger"},
        "overlap": "skip",
        **over,
    }


async def test_schedule_crud_validation_and_firing(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/v1/agents",
        json={
            "name": "pinger",
            "system_prompt": "You ping.",
            "tools": ["run_command"],
            "permissions": {"can_commit": False, "commands": {"allow": ["sleep *"], "default": "deny"}},
            "llm": {"provider": "scripted", "script": SCRIPT},
        },
    )
    assert r.status_code == 201, r.text
    for bad, field in [
        (spec(cron="61 * * * *"), "cron"),
        (spec(timezone="Mars/Olympus"), "timezone"),
        (spec(goal={"title": "both"}), "task"),
        (spec(task={"title": "x", "assignee": "nobody"}), "task.assignee"),
        (spec(overlap="sometimes"), "overlap"),
        (spec(catch_up_limit=0), "catch_up_limit"),
    ]:
        r = await api.post("/v1/schedules", json=bad)
        assert r.status_code == 422, (field, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert field in [e["field"] for e in r.json()["errors"]], (field, r.json())

    r = await api.post("/v1/schedules", json=spec())
    assert r.status_code == 201, r.text
    sched = r.json()
    assert sched["kind"] == "task" and sched["next_fire_at"] and sched["task"]["assignee_agent_id"]
    assert (await api.post("/v1/schedules", json=spec())).status_code == 409

    # Occurrences every 2 s, each task sleeping 2 s: at least one is skipped while another runs.
    body = await wait_for(
        api, f"/v1/schedules/{sched['id']}", lambda s: s["fired_count"] >= 2 and s["skipped_count"] >= 1, attempts=600
    )
    r = await api.put(f"/v1/schedules/{sched['id']}", json=spec(enabled=False))
    assert r.status_code == 200 and r.json()["next_fire_at"] is None
    tasks = [
        t for t in (await api.get("/v1/tasks", params={"limit": 100})).json()["items"] if t["title"] == "Scheduled ping"
    ]
    assert len(tasks) >= 2 and body["active_item_id"] in [t["id"] for t in tasks]
    done = [
        await wait_for(api, f"/v1/tasks/{t['id']}", lambda t: t["status"] in ("done", "failed"), attempts=600)
        for t in tasks
    ]
    assert all(t["status"] == "done" for t in done), done
    # Never two at once: each run started after the previous one ended.
    runs = sorted(
        [(await api.get(f"/v1/runs/{t['current_run_id']}")).json() for t in done], key=lambda r: r["started_at"]
    )
    for before, after in zip(runs, runs[1:], strict=False):
        assert before["ended_at"] <= after["started_at"], (before, after)

    r = await api.delete(f"/v1/schedules/{sched['id']}")
    assert r.status_code == 204 and (await api.get(f"/v1/schedules/{sched['id']}")).status_code == 404
    audit = (await api.get("/v1/audit", params={"resource": f"schedules/{sched['id']}"})).json()["items"]
    assert {"schedule.create", "schedule.update", "schedule.delete", "schedule.fire"} <= {a["action"] for a in audit}

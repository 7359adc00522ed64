"""The dashboards and alerts against a real Prometheus (Debian's package) scraping the real services: after a
demo flow (a run that succeeds, one that fails, one that waits for an approval, one that times out, a poison
message, a schedule coming due, a lead's chat command through a local fake of Telegram's Bot API, the board
projected to a Plane double with an item edited behind its back, an agent with a daily budget), every overview
panel's query returns data through Prometheus's HTTP API — NATS's connections and streams too, which core-api
reads from nats-server's monitoring endpoint, and a consumer loop restarted after its durable was deleted — (a
panel that needs what the demo cannot make would say so in NEEDS),
and when a service is killed Prometheus's own rule evaluation fires NexusServiceDown. The rule file is the one
deploy/ ships, with its `for:` durations shortened for the test."""

import asyncio
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from nexus.dev.doubles.plane import PlaneDouble
from nexus.dev.servers import free_port
from nexus.dev.stack import SERVICES
from tests.conftest import need_tool
from tests.e2e.conftest import running_stack, wait_for
from tests.telegram_gateway.fake_bot_api import FakeBotApi

pytestmark = [pytest.mark.e2e, pytest.mark.infra]

REPO = Path(__file__).resolve().parents[2]
OVERVIEW = REPO / "deploy" / "grafana" / "dashboards" / "nexus-overview.json"
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
FINAL = ("succeeded", "failed", "cancelled", "timed_out")

# Panels whose series only exist after something the demo flow cannot make, and why it cannot (none today).
NEEDS: dict[str, str] = {}
LEAD = 1001
PLANE_KEY, PLANE_HOOK = "plane_api_key", "whsec_" + uuid.uuid4().hex

SUCCEEDS = """
steps:
  - tool_calls: [{name: note, args: {message: "observed"}}]
  - say: done
"""
FAILS = """
steps:
  - tool_calls: [{name: note, args: {message: "one"}}]
  - tool_calls: [{name: note, args: {message: "two: past the step limit"}}]
  - say: never
"""
ASKS = """
steps:
  - tool_calls: [{name: run_command, args: {cmd: "touch approved.txt"}}]
  - say: done
"""
SLEEPS = """
steps:
  - tool_calls: [{name: run_command, args: {cmd: "sleep 3598"}}]
  - say: never
"""


def prometheus_config(tmp: Path, targets: dict[str, int]) -> Path:
    rules = re.sub(r"(?m)^(\s*for:\s*)\d+[smh]\s*$", r"\g<1>2s", RULES.read_text())
    (tmp / "rules.yml").write_text(rules)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": [str(tmp / "rules.yml")],
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]} for name, port in targets.items()
        ],
    }
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def panel_queries() -> dict[str, list[str]]:
    dashboard = json.loads(OVERVIEW.read_text())
    return {
        p["title"]: [t["expr"].replace("$__rate_interval", "1m") for t in p.get("targets", [])]
        for p in dashboard["panels"]
        if p["type"] != "row"
    }


async def query(prom: httpx.AsyncClient, expr: str) -> list:
    r = await prom.get("/api/v1/query", params={"query": expr})
    assert r.status_code == 200 and r.json()["status"] == "success", (expr, r.text)
    return r.json()["data"]["result"]


async def until(check, attempts: int = 300, every_s: float = 0.2):
    """The first truthy value of `check()`; the bound is a count of checks, not an assertion on time."""
    for _ in range(attempts):
        if value := await check():
            return value
        await asyncio.sleep(every_s)
    return await check()


async def agent(api: httpx.AsyncClient, script: str, **spec) -> str:
    name = f"obs-{uuid.uuid4().hex[:6]}"
    r = await api.post(
        "/v1/agents",
        json={
            "name": name,
            "system_prompt": "observed",
            "tools": ["note", "run_command"],
            "llm": {"provider": "scripted", "script": script},
            **spec,
        },
    )
    assert r.status_code == 201, r.text
    return name


async def run_of(api: httpx.AsyncClient, agent_name: str) -> str:
    r = await api.post("/v1/tasks", json={"title": f"observe {uuid.uuid4().hex[:6]}", "assignee": agent_name})
    assert r.status_code == 201, r.text
    return r.json()["current_run_id"]


async def demo_flow(
    api: httpx.AsyncClient, nats_url: str, creds: str, plane: PlaneDouble, plane_url: str, bot: FakeBotApi
) -> int:
    """The demo; returns how many scheduled runs it made (each succeeded)."""
    # The board is projected to Plane (every task below becomes an item there), a lead is bound in chat.
    r = await api.put(
        "/v1/board/providers/default",
        json={
            "provider": "plane",
            "plane": {
                "base_url": plane_url,
                "workspace_slug": plane.workspace,
                "project_id": plane.project_id,
                "api_key_secret": "PLANE_KEY",
                "webhook_secret": "PLANE_HOOK",
            },
        },
    )
    assert r.status_code == 200, r.text
    r = await api.post("/v1/chat-bindings", json={"user_id": str(LEAD), "identity": "lea@example.com", "role": "lead"})
    assert r.status_code == 201, r.text

    # An agent with a daily budget: core-api checks it at dispatch and as the run ends (the budget gauges).
    budgeted = await agent(api, SUCCEEDS)
    r = await api.put(f"/v1/budgets/agents/{budgeted}", json={"usd": 50, "tokens": 1_000_000})
    assert r.status_code == 200, r.text
    ok = await run_of(api, budgeted)
    fails = await run_of(api, await agent(api, FAILS, limits={"max_steps": 1}))
    asks = await run_of(api, await agent(api, ASKS, permissions={"commands": {"allow": [], "default": "ask"}}))
    times_out = await run_of(
        api,
        await agent(
            api, SLEEPS, limits={"wall_clock_s": 3}, permissions={"commands": {"allow": ["sleep *"], "default": "deny"}}
        ),
    )
    page = await wait_for(api, f"/v1/approvals?run_id={asks}&status=pending", lambda p: len(p["items"]) == 1)
    r = await api.post(f"/v1/approvals/{page['items'][0]['id']}/approve", json={"reason": "observed"})
    assert r.status_code == 200, r.text
    ends = {
        run: (await wait_for(api, f"/v1/runs/{run}", lambda x: x["status"] in FINAL))["status"]
        for run in (ok, fails, asks, times_out)
    }
    assert list(ends.values()) == ["succeeded", "failed", "succeeded", "timed_out"], ends
    assert 400 <= (await api.post("/v1/tasks", json={"title": 7})).status_code < 500  # a 4xx for the error-share panel
    await poison(nats_url, creds)

    # A lead's chat command: an update the gateway handles, and its reply sent through the outbox.
    await bot.send_text(LEAD, "/agents")
    await bot.wait_message(LEAD, "obs-")

    # An item edited in Plane behind the board's back is repaired by the drift check.
    task_id = (await api.get(f"/v1/runs/{ok}")).json()["task_id"]
    item = await until(lambda: _item(plane, task_id))
    plane.edit(item["id"], name="renamed behind the board's back")
    assert await until(lambda: _repaired(plane, item["id"])), plane.items[item["id"]]

    # Someone deletes two of core-api's durables: its raw loop on run events ends and is restarted (the
    # loop-restart panel) and reads the run stream again from its start, each run's end still counted once
    # (below); the FastStream subscriber's durable for schedule firings is made anew; the schedule's
    # occurrences below, and their runs' events, reach core-api through them.
    await delete_consumer(nats_url, creds, "NEXUS_RUNS", "core-api-runs")
    await delete_consumer(nats_url, creds, "NEXUS_CMDS", "core-api-fire-schedule")

    # A schedule comes due (every 2 s): once it has fired it is switched off and what it started ends.
    pinger = await agent(api, SUCCEEDS)
    r = await api.post(
        "/v1/schedules",
        json={
            "name": f"obs-{uuid.uuid4().hex[:6]}",
            "cron": "* * * * * */2",
            "timezone": "UTC",
            "task": {"title": "observed schedule", "assignee": pinger},
            "overlap": "skip",
        },
    )
    assert r.status_code == 201, r.text
    schedule = r.json()["id"]
    await wait_for(api, f"/v1/schedules/{schedule}", lambda x: x["fired_count"] >= 1)
    assert (await api.delete(f"/v1/schedules/{schedule}")).status_code == 204
    scheduled = [
        t
        for t in (await api.get("/v1/tasks", params={"limit": 100})).json()["items"]
        if t["title"] == "observed schedule"
    ]
    assert scheduled
    for task in scheduled:
        done = await wait_for(api, f"/v1/tasks/{task['id']}", lambda t: t["status"] in ("done", "failed", "cancelled"))
        assert done["status"] == "done", done
    return len(scheduled)


async def _item(plane: PlaneDouble, task_id: str) -> dict | None:
    items = plane.by_external_id(task_id)
    return items[0] if items else None


async def _repaired(plane: PlaneDouble, item_id: str) -> bool:
    return plane.items[item_id]["name"] != "renamed behind the board's back"


async def delete_consumer(nats_url: str, creds: str, stream: str, durable: str) -> None:
    from nexus.events.bus import connect

    nc = await connect(nats_url, "observability-test", creds=creds, user="tools")
    try:
        await nc.jetstream().delete_consumer(stream, durable)
    finally:
        await nc.drain()


async def poison(nats_url: str, creds: str) -> None:
    """A command core-api can never decode: it is dead-lettered (and counted) while the consumer lives on."""
    from nexus.events.bus import connect

    nc = await connect(nats_url, "observability-test", creds=creds, user="tools")
    try:
        await nc.jetstream().publish(
            "nexus.cmd.core.create_goal", b"{not json", headers={"Nats-Msg-Id": uuid.uuid4().hex}
        )
    finally:
        await nc.drain()


@pytest.fixture
def plane() -> Iterator[tuple[PlaneDouble, str]]:
    double = PlaneDouble(api_keys=(PLANE_KEY,), rate_limit=100_000)
    url = double.start()
    yield double, url
    double.stop()


async def test_every_panel_has_data_and_service_down_fires(
    tmp_path, nats_url, mongo_url, nats_auth, fake, plane
) -> None:
    binary = need_tool("prometheus")
    env = {
        "NEXUS_HEARTBEAT_TIMEOUT_S": "20",
        "NEXUS_SCHEDULE_TICK_S": "0.5",
        "NEXUS_NATS_MONITOR_EVERY_S": "1",
        "NEXUS_SCHEDULE_GRACE_S": "5",
        "NEXUS_TELEGRAM_TOKEN": fake.token,
        "NEXUS_TELEGRAM_API_URL": fake.base_url,
        "NEXUS_TELEGRAM_POLL_TIMEOUT_S": "1",
        "NEXUS_SECRET_PLANE_KEY": PLANE_KEY,
        "NEXUS_SECRET_PLANE_HOOK": PLANE_HOOK,
        "NEXUS_DRIFT_INTERVAL_S": "1",
    }
    with running_stack(tmp_path, nats_url, mongo_url, nats_auth=nats_auth, services=list(SERVICES), env=env) as stack:
        port = free_port()
        config = prometheus_config(tmp_path, stack.metrics_ports)
        with open(tmp_path / "prometheus.log", "wb") as out:  # the server writes to its own copy of the descriptor
            prometheus = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            async with (
                httpx.AsyncClient(
                    base_url=stack.api_url,
                    timeout=30,
                    headers={"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"},
                ) as api,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as prom,
            ):
                up = await until(lambda: _all_up(prom, len(stack.metrics_ports)))
                assert up, "Prometheus never scraped every service"
                scheduled = await demo_flow(api, stack.nats_url, stack.creds("tools"), *plane, fake)

                # Every panel returns data once the demo's numbers are scraped (each final state counted once).
                async def empty_panels() -> list[str]:
                    return [
                        title
                        for title, exprs in panel_queries().items()
                        if title not in NEEDS and not any([await query(prom, e) for e in exprs])
                    ]

                async def every_panel_has_data() -> bool:
                    return not await empty_panels()

                assert await until(every_panel_has_data), f"panels without data: {await empty_panels()}"

                # Each final state counted once: Prometheus's sums equal the runs stored, once every run has ended
                # (an occurrence fired as the schedule was deleted may still be running).
                async def stored_and_counted() -> tuple[dict, dict]:
                    runs = (await api.get("/v1/runs", params={"limit": 500})).json()["items"]
                    stored = {k: float(sum(r["status"] == k for r in runs)) for k in FINAL}
                    counted = {
                        r["metric"]["status"]: float(r["value"][1])
                        for r in await query(prom, "sum by (status) (nexus_runs_total)")
                    }
                    return stored if len(runs) == sum(stored.values()) else {}, {k: counted.get(k, 0.0) for k in FINAL}

                async def agree() -> bool:
                    stored, counted = await stored_and_counted()
                    return stored == counted

                assert await until(agree), await stored_and_counted()
                stored, _ = await stored_and_counted()
                assert stored["succeeded"] >= 2 + scheduled and (stored["failed"], stored["timed_out"]) == (1, 1), (
                    stored
                )

                # NATS's own numbers, from its monitoring endpoint through core-api: every service's connection,
                # and the runs' events the stream holds.
                async def nats_figure(expr: str, at_least: float) -> list:
                    got = await query(prom, expr)
                    return got if got and float(got[0]["value"][1]) >= at_least else []

                connections = await until(lambda: nats_figure("sum(nexus_nats_connections)", len(SERVICES)))
                assert connections, await query(prom, "sum(nexus_nats_connections)")
                runs_stream = 'max(nexus_nats_stream_messages{stream="NEXUS_RUNS"})'
                assert await until(lambda: nats_figure(runs_stream, 1)), await query(prom, runs_stream)
                assert set(NEEDS) <= set(panel_queries()), "NEEDS names a panel the overview does not have"

                # A service goes: Prometheus's own rule evaluation fires NexusServiceDown for it.
                stack.stop_service("telegram-gateway")

                async def firing() -> bool:
                    r = await prom.get("/api/v1/alerts")
                    return any(
                        a["labels"]["alertname"] == "NexusServiceDown"
                        and a["labels"].get("job") == "telegram-gateway"
                        and a["state"] == "firing"
                        for a in r.json()["data"]["alerts"]
                    )

                assert await until(firing), (await prom.get("/api/v1/alerts")).json()
        finally:
            prometheus.terminate()
            prometheus.wait(10)


async def _all_up(prom: httpx.AsyncClient, services: int) -> bool:
    try:
        r = await prom.get("/api/v1/query", params={"query": "up"})
    except httpx.HTTPError:
        return False
    if r.status_code == 503:  # Prometheus is still starting (its storage not ready): not up yet
        return False
    assert r.status_code == 200 and r.json()["status"] == "success", ("up", r.text)
    results = r.json()["data"]["result"]
    return len(results) == services and all(x["value"][1] == "1" for x in results)

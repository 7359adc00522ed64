"""A three-node NATS cluster with every stream and KV bucket at three replicas: the node leading
the run-event stream is killed mid-run, and the run still completes with every event kept."""

import asyncio
import json
import uuid

import httpx
import pytest

from nexus.dev.cluster import start_nats_cluster
from nexus.events.bus import connect
from nexus.events.catalog import RUNS_STREAM, STREAMS
from tests.e2e.conftest import running_stack, wait_for
from tests.e2e.test_first_run import read_sse

pytestmark = [pytest.mark.e2e, pytest.mark.infra]

SCRIPT = """
steps:
  - tool_calls: [{name: note, args: {message: "first"}}]
  - tool_calls: [{name: run_command, args: {cmd: "sleep 2"}}]
  - tool_calls: [{name: note, args: {message: "second"}}]
  - tool_calls: [{name: note, args: {message: "third"}}]
  - say: done
"""


async def _jetstream_ready(url: str, creds: str) -> None:
    nc = await connect(url, "tests", creds=creds)
    try:
        for _ in range(200):  # the cluster elects its meta leader before JetStream answers
            try:
                await nc.jetstream().account_info()
                return
            except Exception:  # noqa: BLE001 — 503 "JetStream not ready" until the election
                await asyncio.sleep(0.1)
        raise AssertionError("JetStream never became ready on the cluster")
    finally:
        await nc.close()


async def test_a_run_survives_the_loss_of_the_node_leading_its_stream(
    tmp_path, mongo_url, nats_auth, nats_creds
) -> None:
    nodes = start_nats_cluster(tmp_path / "cluster", auth=nats_auth)
    try:
        await _jetstream_ready(nodes[0].url, nats_creds)
        env = {"NEXUS_JETSTREAM_REPLICAS": "3"}
        # Every node's URL, as a production client reaches the cluster (there, through one Service).
        urls = ",".join(n.url for n in nodes)
        with running_stack(
            tmp_path, urls, mongo_url, env=env, services=["core-api", "worker"], nats_auth=nats_auth
        ) as stack:
            async with httpx.AsyncClient(
                base_url=stack.api_url, timeout=30, headers={"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"}
            ) as api:
                nc = await connect([n.url for n in nodes], "tests", creds=nats_creds)
                js = nc.jetstream()
                for s in STREAMS:
                    assert (await js.stream_info(s.name)).config.num_replicas == 3, s.name
                r = await api.post(
                    "/v1/agents",
                    json={
                        "name": "steady",
                        "system_prompt": "t",
                        "tools": ["note", "run_command", "finish"],
                        "permissions": {"commands": {"allow": ["sleep *"], "default": "deny"}},
                        "llm": {"provider": "scripted", "script": SCRIPT},
                    },
                )
                assert r.status_code == 201, r.text
                r = await api.post("/v1/tasks", json={"title": f"t-{uuid.uuid4().hex[:6]}", "assignee": "steady"})
                run_id = r.json()["current_run_id"]
                await wait_for(api, f"/v1/runs/{run_id}", lambda b: b["status"] == "running")

                leader = (await js.stream_info(RUNS_STREAM)).cluster.leader
                victim = next(n for n in nodes if n.name == leader)
                await nc.close()
                victim.kill()

                try:
                    run = await wait_for(
                        api, f"/v1/runs/{run_id}", lambda b: b["status"] in ("succeeded", "failed"), attempts=600
                    )
                except AssertionError:
                    nc2 = await connect([n.url for n in nodes if n is not victim], "tests", creds=nats_creds)
                    info = await nc2.jetstream().stream_info(RUNS_STREAM, subjects_filter=f"nexus.run.{run_id}.>")
                    print("DIAG stream subjects", info.state.subjects)
                    for c in ("core-api-runs",):
                        ci = await nc2.jetstream().consumer_info(RUNS_STREAM, c)
                        print(
                            "DIAG consumer",
                            ci.num_pending,
                            ci.num_ack_pending,
                            ci.num_redelivered,
                            ci.delivered,
                            ci.ack_floor,
                            ci.cluster,
                        )
                    raise
                assert run["status"] == "succeeded", run
                notes = [c for s in run["sessions"] for c in s["changes"] if c["type"] == "note"]
                assert [n["message"] for n in notes] == ["first", "second", "third"]
                assert [a["status"] for a in run["attempts"]] == ["succeeded"]  # the node loss cost no retry
                events = await read_sse(api, f"/v1/runs/{run_id}/events")
                assert [e["event"] for e in events].count("run.note") == 3
                assert [json.loads(e["data"])["data"]["status"] for e in events if e["event"] == "run.status"][
                    -1
                ] == "succeeded"
    finally:
        for node in nodes:
            node.kill()

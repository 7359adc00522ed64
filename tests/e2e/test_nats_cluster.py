"""A three-node NATS cluster with every stream and KV bucket at three replicas: the node leading
the run-event stream is killed mid-run, and the run still completes with every event kept."""

import asyncio
import contextlib
import json
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from nexus.dev.cluster import ClusterNode, start_nats_cluster
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


@contextlib.asynccontextmanager
async def cluster_stack(
    tmp_path, mongo_url, nats_auth, nats_creds
) -> AsyncIterator[tuple[list[ClusterNode], httpx.AsyncClient]]:
    """Three nodes, every stream at three replicas, core-api and the worker given every node's URL
    (as a production client reaches the cluster, there through one Service); the nodes die after."""
    nodes = start_nats_cluster(tmp_path / "cluster", auth=nats_auth)
    try:
        await _jetstream_ready(nodes[0].url, nats_creds)
        urls = ",".join(n.url for n in nodes)
        # A queued run whose launch was never heard of is commanded again after 5 s, not 30.
        env = {"NEXUS_JETSTREAM_REPLICAS": "3", "NEXUS_REQUEUE_AFTER_S": "5"}
        with running_stack(
            tmp_path, urls, mongo_url, env=env, services=["core-api", "worker"], nats_auth=nats_auth
        ) as stack:
            async with httpx.AsyncClient(
                base_url=stack.api_url, timeout=60, headers={"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"}
            ) as api:
                yield nodes, api
    finally:
        for node in nodes:
            node.kill()


async def test_a_run_survives_the_loss_of_the_node_leading_its_stream(
    tmp_path, mongo_url, nats_auth, nats_creds
) -> None:
    async with cluster_stack(tmp_path, mongo_url, nats_auth, nats_creds) as (nodes, api):
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


async def test_event_streams_wait_out_a_cluster_without_quorum(tmp_path, mongo_url, nats_auth, nats_creds) -> None:
    """Two of three nodes lost: JetStream has no leader and makes no consumer. A run's event stream
    opened then stays open (saying it waits) and, once the nodes are back, sends every event and ends
    cleanly; a task submitted meanwhile waits for the bus and is created, never a 500."""
    async with cluster_stack(tmp_path, mongo_url, nats_auth, nats_creds) as (nodes, api):
        r = await api.post(
            "/v1/agents",
            json={
                "name": "brief",
                "system_prompt": "t",
                "tools": ["note", "finish"],
                "llm": {
                    "provider": "scripted",
                    "script": 'steps:\n  - tool_calls: [{name: note, args: {message: "hi"}}]\n  - say: done\n',
                },
            },
        )
        assert r.status_code == 201, r.text
        r = await api.post("/v1/tasks", json={"title": f"t-{uuid.uuid4().hex[:6]}", "assignee": "brief"})
        run_id = r.json()["current_run_id"]
        await wait_for(api, f"/v1/runs/{run_id}", lambda b: b["status"] == "succeeded")

        lost = nodes[1:]
        for node in lost:
            node.kill()
        lines: list[str] = []
        async with api.stream("GET", f"/v1/runs/{run_id}/events") as stream:
            assert stream.status_code == 200
            reading = stream.aiter_lines()
            # Meanwhile a task is submitted: it is stored, and its announcement waits for the bus.
            submitted = asyncio.create_task(api.post("/v1/tasks", json={"title": "in-the-outage", "assignee": "brief"}))
            waits = 0
            async for line in reading:
                lines.append(line)
                waits += line.startswith(": waiting")
                # Long enough for a publish's retries to meet its first attempt still undecided, well short of
                # the 60 s after which a stream gives up waiting.
                if waits == 5:
                    break
            for node in lost:
                node.restart()
            async for line in reading:  # ends only when the body is complete
                lines.append(line)
        events = [line.partition(":")[2].strip() for line in lines if line.startswith("event:")]
        assert "error" not in events, lines
        assert events.count("run.note") == 1, lines
        statuses = [
            json.loads(line.partition(":")[2])["data"]["status"]
            for i, line in enumerate(lines)
            if line.startswith("data:") and i and lines[i - 1] == "event: run.status"
        ]
        assert statuses[-1] == "succeeded", lines

        r = await submitted
        assert r.status_code == 201, r.text  # the request rode out the election
        late = r.json()["current_run_id"]
        await wait_for(api, f"/v1/runs/{late}", lambda b: b["status"] == "succeeded")

        # The outage is told once per consumer and streak, with its cause, and then its end, not every half
        # second (which of the consumers a fetch failed on depends on where each fetch was when the nodes went).
        for service in ("core-api", "worker"):
            log = (tmp_path / f"{service}.log").read_text(errors="replace")
            failed = Counter(re.findall(r"fetch failed on (\S+);", log))
            again = Counter(re.findall(r"fetching on (\S+) again", log))
            assert all(n <= again[durable] + 1 for durable, n in failed.items()), (service, failed, again)

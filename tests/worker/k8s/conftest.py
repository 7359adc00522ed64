"""A fake Kubernetes API server per test, a kubeconfig pointing kr8s at it, and the runtime under test."""

from collections.abc import AsyncIterator
from pathlib import Path

import kr8s.asyncio
import pytest

from nexus.events.payloads import RunConfig
from nexus.worker.runtimes.base import RunRequest
from nexus.worker.runtimes.kubernetes import KubernetesRuntime

from .fake_apiserver import FakeApiServer, load_role
from .fake_cluster import FakeCluster

NAMESPACE = "agents"
# The Role the manifests grant the worker: the fake refuses (403) every call it does not allow.
WORKER_ROLE = Path(__file__).resolve().parents[3] / "k8s" / "base" / "worker-rbac.yaml"
IMAGE = "ghcr.io/nexus/agent-runner:test"


def make_request(run_id: str = "run_01jq8m6z4x7k2n9p3r5t7v9w1y", attempt: int = 1, **overrides: object) -> RunRequest:
    config = RunConfig(
        run_id=run_id, agent_id="agt_01jq8m5coder", task_id="task_01jq8m5login", system_prompt="You write code."
    )
    fields: dict[str, object] = {
        "run_id": run_id,
        "attempt": attempt,
        "config": config,
        "env": {"NEXUS_NATS_URL": "nats://nats.nexus:4222", "NEXUS_RUN_TOKEN": "tok-secret-123"},
        "wall_clock_s": 900,
    }
    return RunRequest(**(fields | overrides))  # type: ignore[arg-type]  # fields built as a dict


@pytest.fixture
async def apiserver() -> AsyncIterator[FakeApiServer]:
    server = FakeApiServer(namespaces={NAMESPACE}, rules=load_role(WORKER_ROLE))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def cluster(apiserver: FakeApiServer) -> FakeCluster:
    return FakeCluster(apiserver, NAMESPACE)


@pytest.fixture
async def kube_api(apiserver: FakeApiServer, tmp_path: Path) -> AsyncIterator[kr8s.asyncio.Api]:
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig", NAMESPACE)
    api = await kr8s.asyncio.api(kubeconfig=str(kubeconfig))
    yield api
    if api._session is not None:  # kr8s has no public close; don't leak the connection pool across tests
        await api._session.aclose()


@pytest.fixture
def runtime(kube_api: kr8s.asyncio.Api, cluster: FakeCluster) -> KubernetesRuntime:
    return KubernetesRuntime(NAMESPACE, IMAGE, api=kube_api)

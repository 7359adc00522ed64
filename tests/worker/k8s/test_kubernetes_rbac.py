"""The fake API server enforces the Role the manifests grant the worker, and merges strategic merge
patches the way the API server does: the runtime is checked against what a cluster would allow."""

import copy

import pytest
from kr8s import ServerError

from nexus.worker.runtimes.kubernetes import KubernetesRuntime

from .conftest import NAMESPACE, WORKER_ROLE, make_request
from .fake_apiserver import ApiError, FakeApiServer, load_role, strategic_merge_patch
from .fake_cluster import FakeCluster


async def test_a_whole_run_needs_nothing_the_role_withholds(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer
) -> None:
    handle = await runtime.start_run(make_request())
    cluster.start_pod(handle.ref)
    cluster.finish_pod(handle.ref, exit_code=0)
    assert (await runtime.status(handle.run_id)).phase == "succeeded"
    assert await runtime.list_runs() == [handle.run_id]
    await runtime.get_logs(handle.run_id)
    await runtime.cancel_run(handle.run_id)
    await runtime.cleanup(handle.run_id)
    assert apiserver.forbidden == []
    assert apiserver.requests  # the calls above went through the enforcing server


async def test_what_the_role_withholds_is_refused_with_a_forbidden_status(kube_api, apiserver: FakeApiServer) -> None:
    # The worker may not list Secrets (a run's Secret is owned by its Job): the fake says 403.
    with pytest.raises(ServerError) as refused:
        [s async for s in kube_api.get("secrets", namespace=NAMESPACE)]
    assert refused.value.response.status_code == 403
    assert 'cannot list resource "secrets"' in refused.value.status["message"]
    assert set(apiserver.forbidden) == {("list", "", "secrets")}  # kr8s retries a refused call


async def test_without_patch_on_jobs_the_runtime_cannot_resume_its_job(apiserver: FakeApiServer, kube_api) -> None:
    rules = copy.deepcopy(load_role(WORKER_ROLE))
    for rule in rules:
        if "jobs" in rule["resources"]:
            rule["verbs"].remove("patch")
    apiserver.rules = rules
    FakeCluster(apiserver, NAMESPACE)
    runtime = KubernetesRuntime(NAMESPACE, "img:test", api=kube_api)
    with pytest.raises(Exception):  # noqa: B017 — the runtime's own error type wraps the 403
        await runtime.start_run(make_request())
    assert ("patch", "batch", "jobs") in apiserver.forbidden


def test_a_strategic_merge_patch_merges_keyed_lists_and_replaces_others() -> None:
    pod = {
        "spec": {
            "containers": [{"name": "runner", "image": "a", "env": [{"name": "A", "value": "1"}]}],
            "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "config", "secret": {"secretName": "s"}}],
            "args": ["x", "y"],
        },
        "metadata": {"finalizers": ["a"], "labels": {"keep": "1", "drop": "2"}},
    }
    patch = {
        "spec": {
            "containers": [{"name": "runner", "env": [{"name": "B", "value": "2"}]}],
            "volumes": [{"name": "config", "$patch": "delete"}],
            "args": ["z"],
        },
        "metadata": {"finalizers": ["b"], "labels": {"drop": None}},
    }
    out = strategic_merge_patch(pod, patch)
    (runner,) = out["spec"]["containers"]
    assert runner["image"] == "a"  # merged by name, not replaced
    assert runner["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert out["spec"]["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert out["spec"]["args"] == ["z"]  # not a keyed list: replaced
    assert out["metadata"] == {"finalizers": ["a", "b"], "labels": {"keep": "1"}}
    with pytest.raises(ApiError):
        strategic_merge_patch(pod, {"spec": {"containers": [{"image": "no name"}]}})

"""KubernetesRuntime against the fake API server: the production kr8s calls over real HTTP."""

import base64

import kr8s.asyncio
import msgspec
import pytest
from kr8s import ServerError
from kr8s.asyncio.objects import Job

from nexus.events.payloads import RunConfig
from nexus.worker.runtimes.base import RuntimeError_
from nexus.worker.runtimes.kubernetes import KubernetesRuntime
from nexus.worker.runtimes.kubernetes_objects import CONFIG_PATH, JobSettings, build_job

from .conftest import IMAGE, NAMESPACE, make_request
from .fake_apiserver import FakeApiServer
from .fake_cluster import FakeCluster

RUN = "run_01jq8m6z4x7k2n9p3r5t7v9w1y"


async def test_launch_creates_a_job_and_a_secret_the_job_owns(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer
) -> None:
    request = make_request()
    handle = await runtime.start_run(request)

    (job,) = cluster.jobs()
    (secret,) = cluster.secrets()
    assert (handle.run_id, handle.attempt, handle.runtime, handle.ref) == (
        RUN,
        1,
        "kubernetes",
        job["metadata"]["name"],
    )
    assert job["spec"]["suspend"] is False  # resumed once its Secret existed
    assert [ref["uid"] for ref in secret["metadata"]["ownerReferences"]] == [job["metadata"]["uid"]]
    # Every body the runtime sent passed the strict OpenAPI schema check in the fake server.
    assert sorted(o["kind"] for o in apiserver.validated) == ["Job", "Job", "Secret"]  # create, resume, create
    # What the runner would see in its container: the config file and the environment.
    view = cluster.runner_view(handle.ref)
    assert view.env["NEXUS_RUN_CONFIG"] == CONFIG_PATH
    assert msgspec.json.decode(view.files[CONFIG_PATH], type=RunConfig) == request.config
    assert {k: view.env[k] for k in request.env} == request.env


async def test_launch_runs_to_success(runtime: KubernetesRuntime, cluster: FakeCluster) -> None:
    handle = await runtime.start_run(make_request())
    assert (await runtime.status(RUN)).phase == "pending"
    cluster.start_pod(handle.ref)
    assert (await runtime.status(RUN)).phase == "running"
    cluster.finish_pod(handle.ref, exit_code=0)
    status = await runtime.status(RUN)
    assert (status.phase, status.exit_code) == ("succeeded", 0)


async def test_a_crash_fails_the_run_with_exit_code_and_reason(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await runtime.start_run(make_request())
    cluster.start_pod(handle.ref)
    cluster.finish_pod(handle.ref, exit_code=137, reason="OOMKilled")
    status = await runtime.status(RUN)
    assert (status.phase, status.exit_code) == ("failed", 137)
    assert status.detail.startswith("BackoffLimitExceeded")
    assert "OOMKilled" in status.detail


async def test_passing_the_deadline_fails_with_deadline_exceeded(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await runtime.start_run(make_request(wall_clock_s=60))
    assert cluster.job(handle.ref)["spec"]["activeDeadlineSeconds"] == 60
    cluster.start_pod(handle.ref)
    cluster.exceed_deadline(handle.ref)
    status = await runtime.status(RUN)
    assert status.phase == "failed"
    assert status.detail.startswith("DeadlineExceeded")
    assert status.exit_code is None  # the controller killed the pod; there is no exit to report


async def test_a_run_without_a_job_is_missing(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer
) -> None:
    assert (await runtime.status("run_never_launched")).phase == "missing"
    handle = await runtime.start_run(make_request())
    apiserver.remove("jobs", cluster.job(handle.ref), "Background")  # someone deleted it behind our back
    assert (await runtime.status(RUN)).phase == "missing"


async def test_logs_come_from_the_jobs_pod(
    runtime: KubernetesRuntime, cluster: FakeCluster, kube_api: kr8s.asyncio.Api
) -> None:
    assert await runtime.get_logs(RUN) == []
    handle = await runtime.start_run(make_request())
    assert await runtime.get_logs(RUN) == []  # pod not started: no logs yet, not an error
    cluster.start_pod(handle.ref)
    cluster.write_log(handle.ref, "cloning repo", "step 1: llm", "step 2: write_file src/login.py")
    assert await runtime.get_logs(RUN) == ["cloning repo", "step 1: llm", "step 2: write_file src/login.py"]
    short = KubernetesRuntime(NAMESPACE, IMAGE, api=kube_api, log_tail_lines=2)
    assert await short.get_logs(RUN) == ["step 1: llm", "step 2: write_file src/login.py"]


async def test_cancel_deletes_the_jobs_in_the_foreground(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer
) -> None:
    first = await runtime.start_run(make_request(attempt=1))
    cluster.start_pod(first.ref)
    cluster.finish_pod(first.ref, exit_code=1)
    second = await runtime.start_run(make_request(attempt=2))
    cluster.start_pod(second.ref)
    other = await runtime.start_run(make_request(run_id="run_other"))

    await runtime.cancel_run(RUN)

    assert sorted(apiserver.deletions) == [("jobs", first.ref, "Foreground"), ("jobs", second.ref, "Foreground")]
    # Jobs orphan their pods unless told otherwise; foreground takes pods and Secrets with them.
    assert [j["metadata"]["name"] for j in cluster.jobs()] == [other.ref]
    assert [s["metadata"]["name"] for s in cluster.secrets()] == [other.ref]
    assert {p["metadata"]["labels"]["job-name"] for p in cluster.pods()} == {other.ref}
    assert (await runtime.status(RUN)).phase == "missing"
    await runtime.cancel_run(RUN)  # again: nothing left, no error


async def test_a_job_being_deleted_counts_as_gone(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer
) -> None:
    handle = await runtime.start_run(make_request())
    cluster.start_pod(handle.ref)
    apiserver.hold_foreground_deletions = True
    await runtime.cancel_run(RUN)
    assert cluster.job(handle.ref)["metadata"]["deletionTimestamp"]
    status = await runtime.status(RUN)
    assert (status.phase, status.detail) == ("missing", "Job is being deleted")
    await runtime.cleanup(RUN)
    assert len(apiserver.deletions) == 1  # no second DELETE for a Job already on its way out
    apiserver.finish_foreground_deletions()
    assert cluster.jobs() == [] and cluster.secrets() == [] and cluster.pods() == []


async def test_list_runs_finds_every_run_with_a_job_for_orphan_sweeps(
    runtime: KubernetesRuntime, apiserver: FakeApiServer
) -> None:
    await runtime.start_run(make_request(run_id="run_a", attempt=1))
    await runtime.start_run(make_request(run_id="run_a", attempt=2))
    await runtime.start_run(make_request(run_id="run_b"))
    foreign = build_job(make_request(run_id="run_foreign"), JobSettings(namespace=NAMESPACE, image=IMAGE))
    del foreign["metadata"]["labels"]["app.kubernetes.io/managed-by"]  # not ours: someone else's Job
    apiserver.create("jobs", NAMESPACE, foreign)
    assert await runtime.list_runs() == ["run_a", "run_b"]
    await runtime.cleanup("run_a")
    assert await runtime.list_runs() == ["run_b"]


async def test_relaunching_the_same_attempt_adopts_the_job(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer
) -> None:
    first = await runtime.start_run(make_request())
    second = await runtime.start_run(make_request())
    assert second == first
    assert len(cluster.jobs()) == 1 and len(cluster.secrets()) == 1 and len(cluster.pods()) == 1
    posts = [r for r in apiserver.requests if r.method == "POST" and r.path.endswith("/jobs")]
    assert len(posts) == 2  # the second launch was answered 409 AlreadyExists and adopted the Job


async def test_an_interrupted_launch_leaves_no_pod_and_is_finished_by_the_next(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer
) -> None:
    apiserver.fault("POST", r"/secrets$", status=None)  # the connection drops while creating the Secret
    with pytest.raises(RuntimeError_) as failure:
        await runtime.start_run(make_request())
    assert failure.value.transient
    (job,) = cluster.jobs()
    assert job["spec"]["suspend"] is True and cluster.secrets() == [] and cluster.pods() == []
    assert (await runtime.status(RUN)).detail == "suspended until its Secret exists"

    handle = await runtime.start_run(make_request())
    assert len(cluster.jobs()) == 1 and len(cluster.secrets()) == 1
    cluster.start_pod(handle.ref)  # the kubelet finds the Secret the pod references
    assert (await runtime.status(RUN)).phase == "running"


async def test_a_stale_secret_of_an_earlier_job_is_replaced(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer
) -> None:
    name = build_job(make_request(), JobSettings(namespace=NAMESPACE, image=IMAGE))["metadata"]["name"]
    stale_data = {"run-config.json": base64.b64encode(b"{}").decode()}
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": "deleted-job-uid"}
    apiserver.insert(
        "secrets", {"metadata": {"name": name, "namespace": NAMESPACE, "ownerReferences": [owner]}, "data": stale_data}
    )
    handle = await runtime.start_run(make_request())
    (secret,) = cluster.secrets()
    assert secret["metadata"]["ownerReferences"][0]["uid"] == cluster.job(handle.ref)["metadata"]["uid"]
    assert secret["data"] != stale_data


async def test_a_job_of_another_run_with_the_same_name_is_not_adopted(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    await runtime.start_run(make_request(run_id="run-x"))
    with pytest.raises(RuntimeError_) as failure:
        await runtime.start_run(make_request(run_id="RUN_X"))  # same DNS name, different run
    assert not failure.value.transient
    assert len(cluster.jobs()) == 1


async def test_a_new_attempt_gets_its_own_job_and_status_follows_it(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    first = await runtime.start_run(make_request(attempt=1))
    cluster.start_pod(first.ref)
    cluster.write_log(first.ref, "attempt 1")
    cluster.finish_pod(first.ref, exit_code=1)
    second = await runtime.start_run(make_request(attempt=2))
    assert second.ref != first.ref and len(cluster.jobs()) == 2
    assert (await runtime.status(RUN)).phase == "pending"
    cluster.start_pod(second.ref)
    cluster.write_log(second.ref, "attempt 2")
    assert await runtime.get_logs(RUN) == ["attempt 2"]


@pytest.mark.parametrize("status", [500, 503, 504, 429, None], ids=["500", "503", "504", "429", "dropped"])
async def test_server_trouble_is_transient(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer, status: int | None
) -> None:
    apiserver.fault("POST", r"/jobs$", status=status)
    with pytest.raises(RuntimeError_) as failure:
        await runtime.start_run(make_request())
    assert failure.value.transient
    assert cluster.jobs() == []
    await runtime.start_run(make_request())  # the retry goes through
    assert len(cluster.jobs()) == 1


async def test_reads_map_server_trouble_to_transient(runtime: KubernetesRuntime, apiserver: FakeApiServer) -> None:
    await runtime.start_run(make_request())
    apiserver.fault("GET", r"/jobs\?", status=503)
    with pytest.raises(RuntimeError_) as failure:
        await runtime.status(RUN)
    assert failure.value.transient
    assert (await runtime.status(RUN)).phase == "pending"


@pytest.mark.parametrize("status", [400, 403, 404, 422])
async def test_client_errors_are_permanent(runtime: KubernetesRuntime, apiserver: FakeApiServer, status: int) -> None:
    apiserver.fault("POST", r"/jobs$", status=status, times=None)  # kr8s re-authenticates on 403 before giving up
    with pytest.raises(RuntimeError_) as failure:
        await runtime.start_run(make_request())
    assert not failure.value.transient


async def test_a_missing_namespace_is_permanent(kube_api: kr8s.asyncio.Api, cluster: FakeCluster) -> None:
    runtime = KubernetesRuntime("no-such-namespace", IMAGE, api=kube_api)
    with pytest.raises(RuntimeError_, match="not found") as failure:
        await runtime.start_run(make_request())
    assert not failure.value.transient


async def test_an_invalid_request_fails_before_any_call(runtime: KubernetesRuntime, apiserver: FakeApiServer) -> None:
    seen = len(apiserver.requests)
    with pytest.raises(RuntimeError_) as failure:
        await runtime.start_run(make_request(env={"BAD-NAME": "x"}))
    assert not failure.value.transient
    assert len(apiserver.requests) == seen


# ---------------------------------------------------------------- the fake itself must be able to say no
async def test_the_fake_rejects_what_the_api_server_would(kube_api: kr8s.asyncio.Api) -> None:
    body = build_job(make_request(), JobSettings(namespace=NAMESPACE, image=IMAGE))
    body["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFs"] = True
    with pytest.raises(ServerError) as rejected:
        await Job(body, api=kube_api).create()
    assert rejected.value.response is not None and rejected.value.response.status_code == 422
    assert "readOnlyRootFs" in str(rejected.value)


async def test_the_fake_serves_discovery(kube_api: kr8s.asyncio.Api) -> None:
    assert await kube_api.async_lookup_kind("jobs") == ("job.batch/v1", "jobs", True)
    assert await kube_api.async_lookup_kind("secret") == ("secret/v1", "secrets", True)

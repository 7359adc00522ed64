"""A Job controller that acts after the write, as a real one does: the runtime must read the
in-between states right — a resumed Job with no pod yet, a pod that has exited while its Job does not
yet say Complete — and never call a run finished before its Job is."""

import asyncio

from nexus.worker.runtimes.kubernetes import KubernetesRuntime

from .conftest import NAMESPACE, make_request
from .fake_apiserver import FakeApiServer
from .fake_cluster import FakeCluster

RUN = "run_01jq8m6z4x7k2n9p3r5t7v9w1y"


async def test_the_states_between_a_write_and_the_controller(apiserver: FakeApiServer, kube_api) -> None:
    cluster = FakeCluster(apiserver, NAMESPACE, lagging=True)
    runtime = KubernetesRuntime(NAMESPACE, "img:test", api=kube_api)
    handle = await runtime.start_run(make_request())
    status = await runtime.status(RUN)
    assert (status.phase, status.detail) == ("pending", "waiting for the Job controller")
    assert cluster.pods() == []

    cluster.reconcile()  # the controller creates the pod
    status = await runtime.status(RUN)
    assert (status.phase, status.detail) == ("pending", "pod starting")
    cluster.start_pod(handle.ref)
    assert (await runtime.status(RUN)).phase == "running"

    cluster.finish_pod(handle.ref, exit_code=0)
    # The runner exited, but until the controller counts the pod the Job is not Complete.
    waiting = asyncio.create_task(runtime.wait(RUN))
    await asyncio.wait_for(apiserver.next_watch(), 30)  # wait() has read the Job and is watching it
    status = await runtime.status(RUN)
    assert status.phase == "pending"
    assert not waiting.done()
    cluster.reconcile()
    assert await asyncio.wait_for(waiting, 30) == 0
    assert (await runtime.status(RUN)).phase == "succeeded"


async def test_a_failed_pod_fails_the_run_only_once_the_controller_says_so(apiserver: FakeApiServer, kube_api) -> None:
    cluster = FakeCluster(apiserver, NAMESPACE, lagging=True)
    runtime = KubernetesRuntime(NAMESPACE, "img:test", api=kube_api)
    handle = await runtime.start_run(make_request())
    cluster.reconcile()
    cluster.start_pod(handle.ref)
    cluster.finish_pod(handle.ref, exit_code=3)
    assert (await runtime.status(RUN)).phase == "pending"
    cluster.reconcile()
    status = await runtime.status(RUN)
    assert (status.phase, status.exit_code) == ("failed", 3)

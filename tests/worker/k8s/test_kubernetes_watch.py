"""KubernetesRuntime.watch: status changes from a Job watch, as the worker turns them into run events.

Synchronisation is by events, never by time: `apiserver.next_watch()` returns once a watch stream
is registered, after which no change can be missed. The timeout mark only stops a hang."""

import asyncio

import pytest

from nexus.worker.runtimes.base import RuntimeStatus
from nexus.worker.runtimes.kubernetes import KubernetesRuntime

from .conftest import make_request
from .fake_apiserver import FakeApiServer
from .fake_cluster import FakeCluster

pytestmark = pytest.mark.timeout(60)
RUN = "run_01jq8m6z4x7k2n9p3r5t7v9w1y"


async def test_watch_follows_a_run_to_success(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer
) -> None:
    handle = await runtime.start_run(make_request())
    changes = runtime.watch(RUN)
    assert await anext(changes) == RuntimeStatus(phase="pending", detail="pod starting")
    running = asyncio.ensure_future(anext(changes))
    await apiserver.next_watch()
    cluster.start_pod(handle.ref)  # delivered live on the open stream
    assert (await running).phase == "running"
    cluster.finish_pod(handle.ref, exit_code=0)
    assert await anext(changes) == RuntimeStatus(phase="succeeded", exit_code=0)
    with pytest.raises(StopAsyncIteration):
        await anext(changes)


async def test_watch_replays_changes_made_before_the_stream_opened(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await runtime.start_run(make_request())
    changes = runtime.watch(RUN)
    assert (await anext(changes)).phase == "pending"
    cluster.start_pod(handle.ref)
    cluster.exceed_deadline(handle.ref)
    seen = [status async for status in changes]  # resumes from the list's resourceVersion
    assert [s.phase for s in seen] == ["running", "failed"]
    assert seen[-1].detail.startswith("DeadlineExceeded")


async def test_watch_reports_a_crash_with_its_exit_code(runtime: KubernetesRuntime, cluster: FakeCluster) -> None:
    handle = await runtime.start_run(make_request())
    cluster.start_pod(handle.ref)
    changes = runtime.watch(RUN)
    assert (await anext(changes)).phase == "running"
    cluster.finish_pod(handle.ref, exit_code=2)
    final = await anext(changes)
    assert (final.phase, final.exit_code) == ("failed", 2)


async def test_watch_ends_missing_when_the_run_is_cancelled(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer
) -> None:
    handle = await runtime.start_run(make_request())
    cluster.start_pod(handle.ref)
    changes = runtime.watch(RUN)
    assert (await anext(changes)).phase == "running"
    await runtime.cancel_run(RUN)
    final = await anext(changes)
    assert final.phase == "missing"
    with pytest.raises(StopAsyncIteration):
        await anext(changes)


async def test_watch_of_a_run_without_a_job_ends_at_once(runtime: KubernetesRuntime) -> None:
    assert [s.phase async for s in runtime.watch("run_never_launched")] == ["missing"]


async def test_watch_resumes_when_the_server_closes_the_stream(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer
) -> None:
    handle = await runtime.start_run(make_request())
    changes = runtime.watch(RUN)
    assert (await anext(changes)).phase == "pending"
    running = asyncio.ensure_future(anext(changes))
    await apiserver.next_watch()
    apiserver.close_watches()  # the API server's watch timeout
    await apiserver.next_watch()  # listed again and watching again
    cluster.start_pod(handle.ref)
    assert (await running).phase == "running"
    assert apiserver.watch_count() == 2
    await changes.aclose()


async def test_watch_recovers_from_an_expired_resource_version(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer
) -> None:
    handle = await runtime.start_run(make_request())
    apiserver.fault("GET", r"watch=true", expire_watch=True)  # 410 Gone: history compacted
    changes = runtime.watch(RUN)
    assert (await anext(changes)).phase == "pending"
    running = asyncio.ensure_future(anext(changes))
    await apiserver.next_watch()  # the first stream said 410; this one came after a fresh list
    cluster.start_pod(handle.ref)
    assert (await running).phase == "running"
    cluster.finish_pod(handle.ref, exit_code=0)
    assert [s.phase async for s in changes] == ["succeeded"]
    assert apiserver.watch_count() == 2


async def test_closing_the_watch_closes_the_stream(runtime: KubernetesRuntime, apiserver: FakeApiServer) -> None:
    await runtime.start_run(make_request())
    changes = runtime.watch(RUN)
    await anext(changes)
    waiting = asyncio.ensure_future(anext(changes))
    await apiserver.next_watch()
    waiting.cancel()  # the worker stops watching (shutdown, run settled elsewhere)
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await changes.aclose()
    while apiserver.open_watches():  # the server sees the client go
        await asyncio.sleep(0)


# ---------------------------------------------------------------- wait: what the launcher awaits to report `exited`
@pytest.mark.parametrize(("exit_code", "expected"), [(0, 0), (3, 3)])
async def test_wait_returns_the_runners_exit_code(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer, exit_code: int, expected: int
) -> None:
    handle = await runtime.start_run(make_request())
    waiting = asyncio.ensure_future(runtime.wait(RUN))
    await apiserver.next_watch()
    assert not waiting.done()  # a pending Job is not an exit
    cluster.start_pod(handle.ref)
    cluster.finish_pod(handle.ref, exit_code=exit_code)
    assert await waiting == expected


async def test_wait_has_no_exit_code_after_a_deadline(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer
) -> None:
    handle = await runtime.start_run(make_request())
    waiting = asyncio.ensure_future(runtime.wait(RUN))
    await apiserver.next_watch()
    cluster.start_pod(handle.ref)
    cluster.exceed_deadline(handle.ref)
    assert await waiting is None


async def test_wait_outlasts_api_trouble(
    runtime: KubernetesRuntime, cluster: FakeCluster, apiserver: FakeApiServer
) -> None:
    handle = await runtime.start_run(make_request())
    apiserver.fault("GET", r"/jobs\?labelSelector", status=503)  # the first list fails
    waiting = asyncio.ensure_future(runtime.wait(RUN))
    await apiserver.next_watch()  # listed again after the backoff and watching
    cluster.start_pod(handle.ref)
    cluster.finish_pod(handle.ref, exit_code=0)
    assert await waiting == 0

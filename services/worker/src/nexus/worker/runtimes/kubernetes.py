"""The Kubernetes runtime: one batch/v1 Job per attempt of a run, through kr8s.

Launch order: the Job is created suspended, then the Secret with the Job as its owner, then the Job
is resumed. The owner reference needs the Job's uid, so the Job must exist first; suspending it
means no pod is scheduled before its config exists, and a launch interrupted half-way leaves a
suspended Job (no pod, no resources) that the next launch of the same attempt adopts and finishes.
The other order would leave an unowned Secret holding the run's secrets if the launch were
interrupted. Costs: one PATCH per launch, so the worker's Role needs `patch` on jobs.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import httpx
import kr8s.asyncio
from kr8s import APITimeoutError, ConnectionClosedError, NotFoundError, ServerError
from kr8s.asyncio.objects import Job, Pod, Secret

from nexus.worker.runtimes.base import RunHandle, RunRequest, RuntimeError_, RuntimeStatus
from nexus.worker.runtimes.kubernetes_objects import (
    CONTAINER,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    JobSettings,
    attempt_of,
    build_job,
    build_secret,
    job_status,
    run_id_of,
    run_selector,
    termination,
)

_FINAL = frozenset({"succeeded", "failed", "missing"})
# Throttling (429) and request timeouts (408) pass; every other 4xx will answer the same next time.
_TRANSIENT_4XX = frozenset({408, 429})
# The API server ends a watch after timeoutSeconds; the read timeout only catches a silent connection.
_WATCH_TIMEOUT_S = 290
_WATCH_READ_TIMEOUT_S = _WATCH_TIMEOUT_S + 30
_WAIT_RETRY_S, _WAIT_RETRY_MAX_S = 0.5, 30.0

log = logging.getLogger(__name__)


def _code(error: ServerError) -> int | None:
    return error.response.status_code if error.response is not None else None


@contextlib.contextmanager
def _kube_errors(action: str) -> Iterator[None]:
    """Turn kr8s/httpx failures into RuntimeError_: 5xx, throttling and connection trouble are transient."""
    try:
        yield
    except ServerError as e:
        code = _code(e)
        transient = code is None or code >= 500 or code in _TRANSIENT_4XX
        raise RuntimeError_(f"{action}: HTTP {code}: {e}", transient=transient) from e
    except NotFoundError as e:  # raced with a deletion: the next look will see the new state
        raise RuntimeError_(f"{action}: {e}", transient=True) from e
    except (httpx.TransportError, APITimeoutError, ConnectionClosedError, OSError) as e:
        raise RuntimeError_(f"{action}: {type(e).__name__}: {e}", transient=True) from e


def _selector(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in labels.items())


def _newest(jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(jobs, key=attempt_of, default=None)


class KubernetesRuntime:
    """Runs each attempt of a run as a Job in `namespace`; see the module docstring for the launch order."""

    name = "kubernetes"

    def __init__(
        self,
        namespace: str,
        image: str,
        *,
        api: kr8s.asyncio.Api | None = None,
        service_account: str = "nexus-agent-runner",
        cpu_request: str = "250m",
        cpu_limit: str = "1",
        memory_request: str = "256Mi",
        memory_limit: str = "1Gi",
        ttl_after_finished_s: int = 600,
        log_tail_lines: int = 2000,
    ) -> None:
        self.settings = JobSettings(
            namespace=namespace,
            image=image,
            service_account=service_account,
            cpu_request=cpu_request,
            cpu_limit=cpu_limit,
            memory_request=memory_request,
            memory_limit=memory_limit,
            ttl_after_finished_s=ttl_after_finished_s,
        )
        self._api = api
        self._log_tail_lines = log_tail_lines

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    async def _kube(self) -> kr8s.asyncio.Api:
        if self._api is None:  # in a pod: the worker's service account; elsewhere: the kubeconfig
            with _kube_errors("connect to the Kubernetes API"):
                try:
                    self._api = await kr8s.asyncio.api()
                except ValueError as e:  # no credentials at all
                    raise RuntimeError_(f"connect to the Kubernetes API: {e}", transient=False) from e
        return self._api

    # ------------------------------------------------------------ launch
    async def start_run(self, request: RunRequest) -> RunHandle:
        try:
            body = build_job(request, self.settings)
        except ValueError as e:
            raise RuntimeError_(f"invalid run request: {e}", transient=False) from e
        api = await self._kube()
        job = await self._create_or_adopt_job(api, body, request)
        await self._ensure_secret(api, request, job)
        if job.spec.get("suspend"):
            with _kube_errors(f"resume Job {job.name}"):
                await job.patch({"spec": {"suspend": False}})
        return RunHandle(run_id=request.run_id, attempt=request.attempt, runtime=self.name, ref=job.name)

    async def _create_or_adopt_job(self, api: kr8s.asyncio.Api, body: dict[str, Any], request: RunRequest) -> Job:
        job = Job(body, api=api)
        with _kube_errors(f"create Job {job.name}"):
            try:
                await job.create()
                return job
            except ServerError as e:
                if _code(e) != 409:
                    raise
            await job.refresh()  # a launch of this attempt got here first (redelivery, another replica)
        existing = job.to_dict()
        if run_id_of(existing) != request.run_id or attempt_of(existing) != request.attempt:
            raise RuntimeError_(
                f"Job {job.name} exists for run {run_id_of(existing)!r} attempt {attempt_of(existing)}",
                transient=False,
            )
        if existing["metadata"].get("deletionTimestamp"):
            raise RuntimeError_(f"Job {job.name} from an earlier launch is still being deleted", transient=True)
        return job

    async def _ensure_secret(self, api: kr8s.asyncio.Api, request: RunRequest, job: Job) -> None:
        body = build_secret(request, job.to_dict())
        secret = Secret(body, api=api)
        with _kube_errors(f"create Secret {secret.name}"):
            try:
                await secret.create()
                return
            except ServerError as e:
                if _code(e) != 409:
                    raise
            await secret.refresh()
            if any(ref.get("uid") == job.metadata.uid for ref in secret.metadata.get("ownerReferences") or []):
                return
            # Left by an earlier Job of the same name and not yet garbage-collected: replace it.
            with contextlib.suppress(NotFoundError):
                await secret.delete()
            await Secret(body, api=api).create()

    # ------------------------------------------------------------ reading state
    async def _list_jobs(self, labels: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
        """Jobs matching `labels` and the list's resourceVersion (where a watch resumes)."""
        api = await self._kube()
        with _kube_errors(f"list Jobs in {self.namespace}"):
            async with api.call_api(
                "GET",
                version="batch/v1",
                namespace=self.namespace,
                url="jobs",
                params={"labelSelector": _selector(labels)},
            ) as response:
                body = response.json()
        return body.get("items") or [], body.get("metadata", {}).get("resourceVersion", "")

    async def _run_jobs(self, run_id: str) -> tuple[list[dict[str, Any]], str]:
        jobs, version = await self._list_jobs(run_selector(run_id))
        return [job for job in jobs if run_id_of(job) == run_id], version

    async def _pods(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        # The Job's own selector (controller-uid): never a pod of an earlier Job with the same name.
        match = job.get("spec", {}).get("selector", {}).get("matchLabels") or {}
        if not match:
            return []
        api = await self._kube()
        with _kube_errors(f"list pods of Job {job['metadata']['name']}"):
            pods = [pod async for pod in Pod.list(api=api, namespace=self.namespace, label_selector=match)]
        return sorted(
            (pod.to_dict() for pod in pods if isinstance(pod, Pod)),
            key=lambda p: p["metadata"].get("creationTimestamp", ""),
        )

    async def _describe(self, job: dict[str, Any] | None) -> RuntimeStatus:
        status = job_status(job)
        if status.phase == "failed" and job is not None:
            exit_code, reason = termination(await self._pods(job))
            if exit_code is not None:
                detail = f"{status.detail}; {CONTAINER} {reason or 'exited'} (exit {exit_code})"
                status = RuntimeStatus(phase="failed", exit_code=exit_code, detail=detail)
        return status

    async def status(self, run_id: str) -> RuntimeStatus:
        jobs, _ = await self._run_jobs(run_id)
        return await self._describe(_newest(jobs))

    async def list_runs(self) -> list[str]:
        jobs, _ = await self._list_jobs({LABEL_MANAGED_BY: MANAGED_BY})
        return sorted({run_id for job in jobs if (run_id := run_id_of(job))})

    async def get_logs(self, run_id: str) -> list[str]:
        """The last lines of the newest attempt's pod; empty while it has not started or once it is gone."""
        jobs, _ = await self._run_jobs(run_id)
        job = _newest(jobs)
        if job is None:
            return []
        api = await self._kube()
        lines: list[str] = []
        for pod in await self._pods(job):
            if pod.get("status", {}).get("phase", "Pending") == "Pending":
                continue
            with _kube_errors(f"read logs of pod {pod['metadata']['name']}"):
                try:
                    async for line in Pod(pod, api=api).logs(container=CONTAINER, tail_lines=self._log_tail_lines):
                        lines.append(line)
                except ServerError as e:
                    if _code(e) not in (400, 404):  # not started yet / already gone
                        raise
        return lines

    async def watch(self, run_id: str) -> AsyncIterator[RuntimeStatus]:
        """Yield the run's status each time it changes, starting with the current one, and end once it is
        succeeded, failed or missing. Follows the newest attempt; when the server ends the watch
        stream (timeout, 410 Gone) it lists again and resumes, so no change is missed."""
        last: RuntimeStatus | None = None
        while True:
            jobs, version = await self._run_jobs(run_id)
            current = _newest(jobs)
            async with contextlib.aclosing(self._watch_jobs(run_id, version)) as events:
                status = await self._describe(current)
                while True:
                    if status != last:
                        last = status
                        yield status
                    if status.phase in _FINAL:
                        return
                    event = await anext(events, None)
                    if event is None:
                        break  # the stream ended: list again
                    kind, job = event
                    if current is not None and attempt_of(job) < attempt_of(current):
                        continue
                    current = None if kind == "DELETED" else job
                    status = await self._describe(current)

    async def wait(self, run_id: str) -> int | None:
        """Until the run's Job has finished or is gone: the runner's exit code, None when there is none
        (deadline exceeded, Job deleted). The launcher awaits this to report `exited`; API trouble on
        the way is waited out with backoff, a permanent error (e.g. 403) is raised."""
        delay = _WAIT_RETRY_S
        while True:
            try:
                async for status in self.watch(run_id):
                    if status.phase in _FINAL:
                        return status.exit_code
            except RuntimeError_ as e:
                if not e.transient:
                    raise
                log.warning("watching run %s: %s; retrying in %.1fs", run_id, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _WAIT_RETRY_MAX_S)

    async def _watch_jobs(self, run_id: str, version: str) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        api = await self._kube()
        params = {
            "watch": "true",
            "labelSelector": _selector(run_selector(run_id)),
            "resourceVersion": version,
            "timeoutSeconds": str(_WATCH_TIMEOUT_S),
        }
        with _kube_errors(f"watch Jobs of run {run_id}"):
            try:
                async with api.call_api(
                    "GET",
                    version="batch/v1",
                    namespace=self.namespace,
                    url="jobs",
                    params=params,
                    stream=True,
                    timeout=httpx.Timeout(30, read=_WATCH_READ_TIMEOUT_S),
                ) as response:
                    async for line in response.aiter_lines():
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event.get("type") == "ERROR":  # 410 Gone and friends: start over from a list
                            return
                        job = event.get("object") or {}
                        if event.get("type") in ("ADDED", "MODIFIED", "DELETED") and run_id_of(job) == run_id:
                            yield event["type"], job
            except APITimeoutError:
                return

    # ------------------------------------------------------------ stopping
    async def _delete(self, job: dict[str, Any]) -> None:
        if job["metadata"].get("deletionTimestamp"):
            return  # already on its way out
        api = await self._kube()
        with _kube_errors(f"delete Job {job['metadata']['name']}"):
            with contextlib.suppress(NotFoundError):
                # Foreground: the Job stays visible until its pod is gone, so nothing looks finished early.
                await Job(job, api=api).delete(propagation_policy="Foreground")

    async def cancel_run(self, run_id: str) -> None:
        """Delete every Job of the run, finished attempts too, so that `status` then says `missing`
        rather than reporting an earlier attempt. Pods and Secrets go with their Job."""
        jobs, _ = await self._run_jobs(run_id)
        for job in jobs:
            await self._delete(job)

    async def cleanup(self, run_id: str) -> None:
        """Same as cancel_run: a finished run's Jobs (kept by ttlSecondsAfterFinished) go now."""
        await self.cancel_run(run_id)

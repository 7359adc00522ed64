"""Pure builders and readers of the Kubernetes objects behind one run: a Job and the Secret it owns.

No I/O here: `kubernetes.py` sends these bodies through kr8s, tests validate them against the
Kubernetes OpenAPI schema."""

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any, cast

import msgspec

from nexus.worker.runtimes.base import RunRequest, RuntimeStatus

MANAGED_BY = "nexus-worker"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_RUN_ID = "nexus.dev/run-id"
LABEL_AGENT_ID = "nexus.dev/agent-id"
LABEL_TASK_ID = "nexus.dev/task-id"
LABEL_ATTEMPT = "nexus.dev/attempt"
# Label values are limited to 63 safe characters; the exact ids travel in annotations of the same names.
ANNOTATION_RUN_ID = LABEL_RUN_ID

CONTAINER = "runner"
CONFIG_KEY = "run-config.json"
CONFIG_DIR = "/etc/nexus"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
WORKSPACE_DIR = "/workspace"
RUNNER_UID = 10001

_DNS_LABEL_MAX = 63
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, kw_only=True)
class JobSettings:
    namespace: str
    image: str
    service_account: str = "nexus-agent-runner"
    cpu_request: str = "250m"
    cpu_limit: str = "1"
    memory_request: str = "256Mi"
    memory_limit: str = "1Gi"
    ttl_after_finished_s: int = 600


def _digest(value: str, length: int = 8) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:length]


def job_name(run_id: str, attempt: int) -> str:
    """`nexus-<run id>-a<attempt>`, as a DNS label: the Job's name becomes a pod label, so ≤ 63 characters.

    Ids that only differ in case or punctuation map to the same name; `start_run` refuses to adopt a
    Job whose run-id annotation is not exactly its own, so such a clash fails loudly instead."""
    slug = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")
    suffix = f"-a{attempt}"
    room = _DNS_LABEL_MAX - len("nexus-") - len(suffix)
    if not slug or len(slug) > room:
        slug = f"{slug[: room - 9].rstrip('-')}-{_digest(run_id)}".lstrip("-")
    return f"nexus-{slug}{suffix}"


def label_value(value: str) -> str:
    """The value itself when Kubernetes accepts it as a label value; otherwise a sanitized prefix and a hash."""
    if len(value) <= _DNS_LABEL_MAX and _LABEL_VALUE.match(value):
        return value
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:54].strip("-_.")
    return f"{cleaned}-{_digest(value)}" if cleaned else _digest(value)


def run_selector(run_id: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_RUN_ID: label_value(run_id)}


def _labels(request: RunRequest) -> dict[str, str]:
    config = request.config
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_RUN_ID: label_value(request.run_id),
        LABEL_AGENT_ID: label_value(config.agent_id),
        LABEL_TASK_ID: label_value(config.task_id),
        LABEL_ATTEMPT: str(request.attempt),
    }


def _annotations(request: RunRequest) -> dict[str, str]:
    config = request.config
    return {ANNOTATION_RUN_ID: request.run_id, LABEL_AGENT_ID: config.agent_id, LABEL_TASK_ID: config.task_id}


def _check(request: RunRequest) -> None:
    if request.attempt < 1:
        raise ValueError(f"attempt must be ≥ 1, got {request.attempt}")
    if request.wall_clock_s < 1:
        raise ValueError(f"wall_clock_s must be ≥ 1, got {request.wall_clock_s}")
    bad = sorted(name for name in request.env if not _ENV_NAME.match(name))
    if bad:
        raise ValueError(f"environment variable names must match {_ENV_NAME.pattern}: {bad}")


def build_job(request: RunRequest, settings: JobSettings, *, suspend: bool = True) -> dict[str, Any]:
    """The batch/v1 Job for one attempt of a run. Created suspended: no pod exists until its Secret does."""
    _check(request)
    name = job_name(request.run_id, request.attempt)
    labels = _labels(request)
    # The root filesystem is read-only: tools that write under $HOME (git, pip) get /tmp unless told otherwise.
    env: dict[str, dict[str, Any]] = {"HOME": {"value": "/tmp"}}
    for key in sorted(request.env):  # values stay in the Secret; the pod spec names keys only
        env[key] = {"valueFrom": {"secretKeyRef": {"name": name, "key": key}}}
    env["NEXUS_RUN_CONFIG"] = {"value": CONFIG_PATH}
    restricted = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    container = {
        "name": CONTAINER,
        "image": settings.image,
        "workingDir": WORKSPACE_DIR,
        "env": [{"name": key, **source} for key, source in env.items()],
        "resources": {
            "requests": {"cpu": settings.cpu_request, "memory": settings.memory_request},
            "limits": {"cpu": settings.cpu_limit, "memory": settings.memory_limit},
        },
        "securityContext": {
            **restricted,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "run-config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "workspace", "mountPath": WORKSPACE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_spec = {
        "restartPolicy": "Never",
        "serviceAccountName": settings.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # no environment variables describing the namespace's Services
        "securityContext": {**restricted, "runAsUser": RUNNER_UID, "runAsGroup": RUNNER_UID, "fsGroup": RUNNER_UID},
        "containers": [container],
        "volumes": [
            {
                "name": "run-config",
                # 0440 + fsGroup: readable by the runner's group only.
                "secret": {
                    "secretName": name,
                    "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}],
                    "defaultMode": 0o440,
                },
            },
            {"name": "workspace", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": _annotations(request),
        },
        "spec": {
            "suspend": suspend,
            "backoffLimit": 0,  # retries are the worker's, each one a new attempt and a new Job
            "activeDeadlineSeconds": request.wall_clock_s,
            "ttlSecondsAfterFinished": settings.ttl_after_finished_s,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def owner_reference(job: dict[str, Any]) -> dict[str, Any]:
    # No blockOwnerDeletion: setting it needs update on jobs/finalizers, and nothing must wait on a Secret.
    return {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"], "uid": job["metadata"]["uid"]}


def build_secret(request: RunRequest, job: dict[str, Any]) -> dict[str, Any]:
    """The run config and environment of one attempt, owned by its Job so garbage collection removes both."""
    _check(request)
    values = {CONFIG_KEY: msgspec.json.encode(request.config)} | {k: v.encode() for k, v in request.env.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": job["metadata"]["name"],
            "namespace": job["metadata"]["namespace"],
            "labels": _labels(request),
            "annotations": _annotations(request),
            "ownerReferences": [owner_reference(job)],
        },
        "type": "Opaque",
        "immutable": True,
        "data": {key: base64.b64encode(value).decode() for key, value in values.items()},
    }


# ---------------------------------------------------------------- reading what the cluster reports
def run_id_of(job: dict[str, Any]) -> str:
    metadata = job.get("metadata", {})
    # annotations and labels are strings (Kubernetes refuses any other value)
    return cast(
        str, metadata.get("annotations", {}).get(ANNOTATION_RUN_ID) or metadata.get("labels", {}).get(LABEL_RUN_ID, "")
    )


def attempt_of(job: dict[str, Any]) -> int:
    try:
        return int(job.get("metadata", {}).get("labels", {}).get(LABEL_ATTEMPT, "0"))
    except ValueError:
        return 0


def _true_condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    condition: dict[str, Any]
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def job_status(job: dict[str, Any] | None) -> RuntimeStatus:
    """What a Job says about its run. A failed Job's detail starts with the Kubernetes reason
    (`DeadlineExceeded`, `BackoffLimitExceeded`, …) so callers can tell a timeout from a crash."""
    if job is None:
        return RuntimeStatus(phase="missing", detail="no Job")
    if _true_condition(job, "Complete"):
        return RuntimeStatus(phase="succeeded", exit_code=0)
    if failed := _true_condition(job, "Failed"):
        reason, message = failed.get("reason", ""), failed.get("message", "")
        return RuntimeStatus(phase="failed", detail=f"{reason}: {message}" if message else reason)
    if job.get("metadata", {}).get("deletionTimestamp"):
        return RuntimeStatus(phase="missing", detail="Job is being deleted")
    if job.get("spec", {}).get("suspend"):
        return RuntimeStatus(phase="pending", detail="suspended until its Secret exists")
    status = job.get("status", {})
    if status.get("ready", 0) > 0:
        return RuntimeStatus(phase="running")
    if status.get("active", 0) > 0:
        return RuntimeStatus(phase="pending", detail="pod starting")
    return RuntimeStatus(phase="pending", detail="waiting for the Job controller")


def termination(pods: list[dict[str, Any]]) -> tuple[int | None, str]:
    """Exit code and reason (`Error`, `OOMKilled`, …) of the runner container in the newest terminated pod."""
    for pod in sorted(pods, key=lambda p: p.get("metadata", {}).get("creationTimestamp", ""), reverse=True):
        for container in pod.get("status", {}).get("containerStatuses") or []:
            terminated = container.get("state", {}).get("terminated")
            if container.get("name") == CONTAINER and terminated:
                return terminated.get("exitCode"), terminated.get("reason", "")
    return None, ""

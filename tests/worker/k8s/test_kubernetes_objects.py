"""The Job and Secret of one run, checked without a server: schema, policy, names, status reading."""

import base64
import json
import re

import kubernetes_validate
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.events.payloads import RunConfig
from nexus.worker.runtimes.kubernetes_objects import (
    CONFIG_KEY,
    CONFIG_PATH,
    LABEL_RUN_ID,
    JobSettings,
    build_job,
    build_secret,
    job_name,
    job_status,
    label_value,
    termination,
)

from .conftest import IMAGE, NAMESPACE, make_request

SETTINGS = JobSettings(namespace=NAMESPACE, image=IMAGE)
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def created(job: dict) -> dict:
    """The Job as the API server returns it: with a uid the Secret's owner reference points at."""
    return job | {"metadata": job["metadata"] | {"uid": "4f0c1d7e-1111-4222-8333-444455556666"}}


REQUESTS = {
    "plain": make_request(),
    "no-env": make_request(env={}),
    "awkward-ids": make_request(
        run_id="Run/ÄÖ with spaces and a very long tail " + "x" * 80,
        attempt=12,
        config=RunConfig(run_id="r", agent_id="agent: coder #1", task_id="T" * 100, system_prompt="p"),
    ),
}


# kr8s supports Kubernetes 1.28–1.35: every object must be valid on the oldest and the newest.
@pytest.mark.parametrize("version", ["1.28", "1.35"])
@pytest.mark.parametrize("request_name", sorted(REQUESTS))
def test_job_and_secret_are_valid_kubernetes_objects(version: str, request_name: str) -> None:
    request = REQUESTS[request_name]
    job = build_job(request, SETTINGS)
    kubernetes_validate.validate(job, version, strict=True)
    kubernetes_validate.validate(build_secret(request, created(job)), version, strict=True)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    job = build_job(make_request(), SETTINGS)
    job["spec"]["template"]["spec"]["automountServiceAccountTokn"] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.33", strict=True)


def test_job_carries_the_run_policy() -> None:
    request = make_request(wall_clock_s=1234)
    job = build_job(request, JobSettings(namespace=NAMESPACE, image=IMAGE, cpu_limit="2", ttl_after_finished_s=77))
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["suspend"] is True
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (0, 1234, 77)
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "nexus-agent-runner"
    assert container["image"] == IMAGE
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    }
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert "emptyDir" in mounts["/workspace"] and "emptyDir" in mounts["/tmp"]
    assert mounts["/etc/nexus"]["secret"]["secretName"] == job["metadata"]["name"]
    assert {"name": "NEXUS_RUN_CONFIG", "value": CONFIG_PATH} in container["env"]


def test_labels_name_the_run() -> None:
    job = build_job(make_request(attempt=3), SETTINGS)
    expected = {
        "app.kubernetes.io/managed-by": "nexus-worker",
        "nexus.dev/run-id": "run_01jq8m6z4x7k2n9p3r5t7v9w1y",
        "nexus.dev/agent-id": "agt_01jq8m5coder",
        "nexus.dev/task-id": "task_01jq8m5login",
        "nexus.dev/attempt": "3",
    }
    assert job["metadata"]["labels"] == expected
    assert job["spec"]["template"]["metadata"]["labels"] == expected


def test_secret_values_never_appear_in_the_job() -> None:
    request = make_request()
    text = json.dumps(build_job(request, SETTINGS))
    for value in request.env.values():
        assert value not in text
    assert request.config.system_prompt not in text


def test_secret_holds_config_and_env_and_is_owned_by_the_job() -> None:
    request = make_request()
    job = created(build_job(request, SETTINGS))
    secret = build_secret(request, job)
    data = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    assert data[CONFIG_KEY] == msgspec.json.encode(request.config)
    assert msgspec.json.decode(data[CONFIG_KEY], type=RunConfig) == request.config
    assert {k: v.decode() for k, v in data.items() if k != CONFIG_KEY} == request.env
    assert secret["metadata"]["name"] == job["metadata"]["name"]
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"], "uid": job["metadata"]["uid"]}
    ]


def test_env_names_the_kubelet_cannot_export_are_refused() -> None:
    with pytest.raises(ValueError, match="environment variable names"):
        build_job(make_request(env={"NOT-A-NAME": "x"}), SETTINGS)


@settings(deadline=None)  # no timing in tests: a loaded machine must not fail a property
@given(run_id=st.text(min_size=1, max_size=300), attempt=st.integers(min_value=1, max_value=10**9))
def test_job_names_are_dns_labels(run_id: str, attempt: int) -> None:
    name = job_name(run_id, attempt)
    assert len(name) <= 63 and DNS_LABEL.match(name), name
    assert name == job_name(run_id, attempt)
    assert name != job_name(run_id, attempt + 1)


@settings(deadline=None)
@given(value=st.text(max_size=200))
def test_label_values_are_valid_and_keep_good_ids(value: str) -> None:
    label = label_value(value)
    assert len(label) <= 63 and LABEL_VALUE.match(label), label
    if len(value) <= 63 and LABEL_VALUE.match(value):
        assert label == value


def test_long_run_ids_stay_distinct() -> None:
    a, b = "run_" + "a" * 100 + "1", "run_" + "a" * 100 + "2"
    assert job_name(a, 1) != job_name(b, 1)
    assert label_value(a) != label_value(b)
    assert build_job(make_request(run_id=a), SETTINGS)["metadata"]["annotations"][LABEL_RUN_ID] == a


def _job(status: dict | None = None, **spec: object) -> dict:
    return {"metadata": {"name": "j"}, "spec": spec, "status": status or {}}


def _failed(reason: str, message: str) -> dict:
    return _job(
        {
            "conditions": [
                {"type": "FailureTarget", "status": "True"},
                {"type": "Failed", "status": "True", "reason": reason, "message": message},
            ]
        }
    )


@pytest.mark.parametrize(
    ("job", "phase", "detail"),
    [
        (None, "missing", "no Job"),
        (_job(suspend=True), "pending", "suspended until its Secret exists"),
        (_job({"active": 1, "ready": 0}), "pending", "pod starting"),
        (_job({"active": 1, "ready": 1}), "running", ""),
        (
            _job({"conditions": [{"type": "Suspended", "status": "False"}, {"type": "Complete", "status": "True"}]}),
            "succeeded",
            "",
        ),
        (
            _failed("DeadlineExceeded", "Job was active longer than specified deadline"),
            "failed",
            "DeadlineExceeded: Job was active longer than specified deadline",
        ),
        (
            {**_job({"active": 1, "ready": 1}), "metadata": {"name": "j", "deletionTimestamp": "2025-01-01T00:00:00Z"}},
            "missing",
            "Job is being deleted",
        ),
    ],
)
def test_job_status_reading(job: dict | None, phase: str, detail: str) -> None:
    status = job_status(job)
    assert (status.phase, status.detail) == (phase, detail)


def test_termination_reads_the_runner_container_of_the_newest_pod() -> None:
    def pod(created: str, code: int, reason: str) -> dict:
        terminated = {"exitCode": code, "reason": reason}
        return {
            "metadata": {"creationTimestamp": created},
            "status": {"containerStatuses": [{"name": "runner", "state": {"terminated": terminated}}]},
        }

    assert termination([pod("2025-01-01T00:00:01Z", 1, "Error"), pod("2025-01-01T00:00:09Z", 137, "OOMKilled")]) == (
        137,
        "OOMKilled",
    )
    assert termination([]) == (None, "")

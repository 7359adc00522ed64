"""The cluster behind the fake API server: a Job controller that reacts to writes like the real one
(suspend/resume, one pod per Job, the status fields and conditions of Kubernetes 1.31+), and a
kubelet the test drives step by step — start the pod, write logs, exit, hit the deadline — so no
test waits on time. `runner_view` resolves what the runner container would see (env, files) from
the pod spec and the Secrets, failing like the kubelet does when a reference does not resolve."""

import base64
import copy
import hashlib
from dataclasses import dataclass
from typing import Any

from .fake_apiserver import FakeApiServer, Obj

_POD_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


@dataclass
class RunnerView:
    env: dict[str, str]
    files: dict[str, bytes]


def _condition(kind: str, reason: str, message: str, now: str, status: str = "True") -> Obj:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


class FakeCluster:
    def __init__(self, apiserver: FakeApiServer, namespace: str = "agents", lagging: bool = False) -> None:
        """`lagging`: the Job controller acts only when the test calls `reconcile()`, as a real one
        acts some time after a write; otherwise it reacts within the write (the simpler default)."""
        self.apiserver = apiserver
        self.namespace = namespace
        self.lagging = lagging
        self._pending: list[str] = []  # Jobs written since the controller last ran (lagging mode)
        apiserver.reactions.append(self._on_write)

    def _on_write(self, event: str, resource: str, obj: Obj) -> None:
        if not self.lagging:
            self._job_controller(event, resource, obj)
        elif resource == "jobs" and event != "DELETED" and obj["metadata"]["name"] not in self._pending:
            self._pending.append(obj["metadata"]["name"])

    def reconcile(self) -> None:
        """Let a lagging controller catch up with every Job written since it last ran."""
        pending, self._pending = self._pending, []
        for name in pending:
            job = self.apiserver.get("jobs", self.namespace, name)
            if job is not None:
                self._complete_if_pods_finished(job)
                self._job_controller("MODIFIED", "jobs", job)

    # ------------------------------------------------------------ reading
    def jobs(self) -> list[Obj]:
        return self.apiserver.list("jobs", self.namespace)

    def secrets(self) -> list[Obj]:
        return self.apiserver.list("secrets", self.namespace)

    def pods(self) -> list[Obj]:
        return self.apiserver.list("pods", self.namespace)

    def job(self, name: str) -> Obj:
        job = self.apiserver.get("jobs", self.namespace, name)
        assert job is not None, f"no Job {name}"
        return job

    def pod_of(self, job_name: str) -> Obj:
        uid = self.job(job_name)["metadata"]["uid"]
        pods = [p for p in self.pods() if p["metadata"]["labels"].get("batch.kubernetes.io/controller-uid") == uid]
        assert len(pods) == 1, f"Job {job_name} has {len(pods)} pods"
        return pods[0]

    # ------------------------------------------------------------ the Job controller
    def _job_controller(self, event: str, resource: str, obj: Obj) -> None:
        if resource != "jobs" or event == "DELETED" or obj["metadata"].get("deletionTimestamp"):
            return
        conditions = {c["type"]: c for c in obj["status"].get("conditions") or []}
        if any(conditions.get(t, {}).get("status") == "True" for t in ("Complete", "Failed")):
            return
        now_status = copy.deepcopy(obj["status"])
        suspended = conditions.get("Suspended")
        if obj["spec"].get("suspend"):
            if suspended is None or suspended["status"] != "True":
                self._set_condition(
                    now_status, _condition("Suspended", "JobSuspended", "Job suspended", self.apiserver.now())
                )
                now_status["active"] = 0
                now_status["ready"] = 0
        else:
            if suspended is not None and suspended["status"] == "True":
                self._set_condition(
                    now_status, _condition("Suspended", "JobResumed", "Job resumed", self.apiserver.now(), "False")
                )
            now_status.setdefault("startTime", self.apiserver.now())
            if not any(
                p["metadata"]["labels"].get("batch.kubernetes.io/controller-uid") == obj["metadata"]["uid"]
                for p in self.pods()
            ):
                self._create_pod(obj)
                now_status["active"] = 1
                now_status["ready"] = 0
                now_status.setdefault("terminating", 0)
                now_status.setdefault("uncountedTerminatedPods", {})
        if now_status != obj["status"]:
            obj["status"] = now_status
            self.apiserver.update("jobs", obj)

    @staticmethod
    def _set_condition(status: Obj, condition: Obj) -> None:
        status["conditions"] = [c for c in status.get("conditions") or [] if c["type"] != condition["type"]] + [
            condition
        ]

    def _create_pod(self, job: Obj) -> None:
        meta = job["metadata"]
        digest = hashlib.sha256(meta["uid"].encode()).digest()
        suffix = "".join(_POD_SUFFIX_ALPHABET[b % len(_POD_SUFFIX_ALPHABET)] for b in digest[:5])
        template = copy.deepcopy(job["spec"]["template"])
        pod = {
            "metadata": {
                "name": f"{meta['name']}-{suffix}",
                "generateName": f"{meta['name']}-",
                "namespace": meta["namespace"],
                "labels": template["metadata"]["labels"],
                "annotations": {"batch.kubernetes.io/job-tracking": ""},
                "finalizers": ["batch.kubernetes.io/job-tracking"],
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template["spec"] | {"nodeName": "node-1"},
            "status": {
                "phase": "Pending",
                "qosClass": "Burstable",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "True",
                        "lastProbeTime": None,
                        "lastTransitionTime": self.apiserver.now(),
                    }
                ],
            },
        }
        self.apiserver.insert("pods", pod)

    def _job_status(self, job_name: str, **changes: Any) -> Obj:
        job = self.job(job_name)
        job["status"].update(changes)
        return job

    # ------------------------------------------------------------ the kubelet, driven by the test
    def runner_view(self, job_name: str) -> RunnerView:
        pod = self.pod_of(job_name)
        secrets = {s["metadata"]["name"]: s for s in self.secrets()}

        def secret_value(name: str, key: str) -> bytes:
            assert name in secrets, f'CreateContainerConfigError: secret "{name}" not found'
            data = secrets[name].get("data") or {}
            assert key in data, f"CreateContainerConfigError: couldn't find key {key} in Secret {self.namespace}/{name}"
            return base64.b64decode(data[key])

        (container,) = pod["spec"]["containers"]
        env: dict[str, str] = {}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
            else:
                ref = var["valueFrom"]["secretKeyRef"]
                env[var["name"]] = secret_value(ref["name"], ref["key"]).decode()
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        files: dict[str, bytes] = {}
        for mount in container.get("volumeMounts") or []:
            source = volumes[mount["name"]].get("secret")
            if source is None:
                continue
            for item in source.get("items") or []:
                files[f"{mount['mountPath']}/{item['path']}"] = secret_value(source["secretName"], item["key"])
        return RunnerView(env=env, files=files)

    def start_pod(self, job_name: str) -> None:
        """The container starts: only possible once the Secret the pod references exists."""
        self.runner_view(job_name)
        pod = self.pod_of(job_name)
        assert pod["status"]["phase"] == "Pending", pod["status"]["phase"]
        now = self.apiserver.now()
        container = pod["spec"]["containers"][0]
        pod["status"].update(
            phase="Running",
            hostIP="10.0.0.1",
            podIP="10.1.0.7",
            startTime=now,
            conditions=[
                {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            containerStatuses=[
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": f"{container['image']}@sha256:{'0' * 64}",
                    "containerID": "containerd://" + "1" * 64,
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
            ],
        )
        self.apiserver.update("pods", pod)
        self.apiserver.update("jobs", self._job_status(job_name, ready=1))

    def write_log(self, job_name: str, *lines: str) -> None:
        pod = self.pod_of(job_name)
        self.apiserver.logs.setdefault((self.namespace, pod["metadata"]["name"]), []).extend(lines)

    def finish_pod(self, job_name: str, exit_code: int = 0, reason: str | None = None) -> None:
        """The runner exits; the Job completes (exit 0) or fails (backoffLimit 0: the first failure is final)."""
        pod = self.pod_of(job_name)
        now = self.apiserver.now()
        (status,) = pod["status"]["containerStatuses"]
        started = status["state"]["running"]["startedAt"]
        status.update(ready=False, started=False)
        status["state"] = {
            "terminated": {
                "exitCode": exit_code,
                "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                "startedAt": started,
                "finishedAt": now,
                "containerID": status["containerID"],
            }
        }
        pod["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
        for condition in pod["status"]["conditions"]:
            if condition["type"] in ("Ready", "ContainersReady"):
                condition.update(status="False", reason="PodCompleted", lastTransitionTime=now)
        pod["metadata"]["finalizers"] = []
        self.apiserver.update("pods", pod)
        job = self.job(job_name)
        if self.lagging:  # the pod is over; the Job says so only once its controller has run
            job["status"].update(
                active=0,
                ready=0,
                uncountedTerminatedPods={"succeeded" if exit_code == 0 else "failed": [pod["metadata"]["uid"]]},
            )
            self.apiserver.update("jobs", job)
            return
        self._conclude(job, exit_code, now)

    def _complete_if_pods_finished(self, job: Obj) -> None:
        uncounted = job["status"].get("uncountedTerminatedPods") or {}
        if uncounted.get("succeeded") or uncounted.get("failed"):
            job["status"]["uncountedTerminatedPods"] = {}
            self._conclude(job, 0 if uncounted.get("succeeded") else 1, self.apiserver.now())

    def _conclude(self, job: Obj, exit_code: int, now: str) -> None:
        if exit_code == 0:
            conditions = [
                _condition(
                    "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods", now
                ),
                _condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods", now),
            ]
            job["status"].update(active=0, ready=0, succeeded=1, completionTime=now)
        else:
            conditions = [
                _condition("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now),
                _condition("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now),
            ]
            job["status"].update(active=0, ready=0, failed=1)
        job["status"]["conditions"] = [*(job["status"].get("conditions") or []), *conditions]
        self.apiserver.update("jobs", job)

    def exceed_deadline(self, job_name: str) -> None:
        """activeDeadlineSeconds passed: the controller kills the pod and fails the Job."""
        pod = self.pod_of(job_name)
        now = self.apiserver.now()
        job = self.job(job_name)
        message = "Job was active longer than specified deadline"
        job["status"]["conditions"] = [
            *(job["status"].get("conditions") or []),
            _condition("FailureTarget", "DeadlineExceeded", message, now),
            _condition("Failed", "DeadlineExceeded", message, now),
        ]
        job["status"].update(active=0, ready=0, failed=1)
        self.apiserver.update("jobs", job)
        self.apiserver.remove("pods", pod)

"""What the deployment tests share: a small kustomize (resources only, which is all k8s/
uses; anything else fails loudly rather than being ignored), the objects it builds from
k8s/, and parametrization over those objects, their pod templates and their containers.

Test modules cannot import each other here (pytest runs with --import-mode=importlib),
so what they share comes in as fixtures and parameters."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "k8s"

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}

K8sObject = dict[str, Any]


def kustomize(directory: Path) -> list[K8sObject]:
    """The objects `kustomize build directory` emits, for kustomizations made only of
    `resources` (files or directories). Raises on what it does not implement."""
    objects: list[K8sObject] = []
    for _, docs in _kustomize_files(directory):
        objects.extend(docs)
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        key = object_key(obj)
        if key in seen:
            raise ValueError(f"{key} is defined twice under {directory}")
        seen.add(key)
    return objects


def kustomized_files(directory: Path) -> list[Path]:
    """Every manifest file a kustomization pulls in, directly or through others."""
    return [path for path, _ in _kustomize_files(directory)]


def _kustomize_files(directory: Path) -> Iterator[tuple[Path, list[K8sObject]]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    if unknown:
        raise NotImplementedError(f"{directory}/kustomization.yaml uses {sorted(unknown)}")
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        if path.is_dir():
            yield from _kustomize_files(path)
        else:
            yield path, [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def object_key(obj: K8sObject) -> tuple[str, str, str, str]:
    meta = obj.get("metadata", {})
    return (obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))


def object_id(obj: K8sObject) -> str:
    _, kind, namespace, name = object_key(obj)
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"


def pod_spec(obj: K8sObject) -> dict[str, Any] | None:
    """The pod spec inside a workload object, or None for other kinds."""
    kind = obj["kind"]
    if kind not in WORKLOAD_KINDS:
        return None
    if kind == "Pod":
        return obj["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


class Pod(NamedTuple):
    """A pod template and the workload object it belongs to."""

    owner: K8sObject
    spec: dict[str, Any]


class Container(NamedTuple):
    pod: Pod
    spec: dict[str, Any]


# Built at collection time: tests are parametrized over these.
ALL_OBJECTS = kustomize(K8S)
SERVICE_IMAGES = {
    "core-api": "nexus-core-api",
    "worker": "nexus-worker",
    "board-sync": "nexus-board-sync",
    "telegram-gateway": "nexus-telegram-gateway",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}

PODS = [Pod(obj, spec) for obj in ALL_OBJECTS if (spec := pod_spec(obj)) is not None]
CONTAINERS = [Container(pod, c) for pod in PODS for c in containers(pod.spec)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "k8s_object" in metafunc.fixturenames:
        metafunc.parametrize("k8s_object", ALL_OBJECTS, ids=object_id)
    if "pod" in metafunc.fixturenames:
        metafunc.parametrize("pod", PODS, ids=[object_id(p.owner) for p in PODS])
    if "namespaced_object" in metafunc.fixturenames:
        objs = [o for o in ALL_OBJECTS if o["kind"] not in CLUSTER_SCOPED]
        metafunc.parametrize("namespaced_object", objs, ids=object_id)
    if "controller_pod" in metafunc.fixturenames:  # pods whose owner selects them by labels
        owned = [p for p in PODS if p.owner["kind"] in {"Deployment", "StatefulSet"}]
        metafunc.parametrize("controller_pod", owned, ids=[object_id(p.owner) for p in owned])
    if "service_container" in metafunc.fixturenames:  # containers running one of our images
        ours = [c for c in CONTAINERS if c.spec["image"] in SERVICE_IMAGES.values()]
        metafunc.parametrize(
            "service_container", ours, ids=[f"{object_id(c.pod.owner)}/{c.spec['name']}" for c in ours]
        )
    if "container" in metafunc.fixturenames:
        metafunc.parametrize(
            "container", CONTAINERS, ids=[f"{object_id(c.pod.owner)}/{c.spec['name']}" for c in CONTAINERS]
        )


@pytest.fixture(scope="session")
def all_objects() -> list[K8sObject]:
    """Everything `tilt up` applies: k8s/ (base + infra)."""
    return ALL_OBJECTS


@pytest.fixture(scope="session")
def base_objects() -> list[K8sObject]:
    """The Nexus services alone, as a production cluster would apply them."""
    return kustomize(K8S / "base")


@pytest.fixture(scope="session")
def pods() -> list[Pod]:
    return PODS


@pytest.fixture(scope="session")
def kustomize_dir():
    return kustomize


@pytest.fixture(scope="session")
def kustomized_files_of():
    return kustomized_files

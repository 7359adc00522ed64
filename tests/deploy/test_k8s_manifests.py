"""k8s/ as the API server and a reviewer would see it: every object valid against the
Kubernetes OpenAPI schema, every container locked down and bounded, the worker allowed
into nexus-agents only, and every reference between objects pointing at something."""

import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import need_tool
from tests.deploy.conftest import CLUSTER_SCOPED, SERVICE_IMAGES

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"

# The oldest Kubernetes we support and the newest the validator knows.
KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.utils.latest_version()]

RUNNER_IMAGE = "nexus-agent-runner"
NAMESPACES = {"nexus", "nexus-agents"}
# Credentials are never committed: whoever deploys creates this Secret (Tilt does in dev).
OPERATOR_PROVIDED = {("Secret", "nexus-secrets")} | {
    # NATS authorization, generated per deployment (python -m nexus.events.credentials k8s DIR; Tilt does in dev).
    ("Secret", name)
    for name in (
        "nexus-nats-config",
        "nexus-nats-run-signer",
        "nexus-nats-core-api",
        "nexus-nats-worker",
        "nexus-nats-board-sync",
        "nexus-nats-telegram-gateway",
    )
}

WORKER_RULES = {
    # patch: the worker creates each Job suspended and resumes it once its Secret exists.
    ("batch", "jobs"): {"create", "delete", "get", "list", "watch", "patch"},
    ("", "secrets"): {"create", "delete", "get"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get"},
}


def find(objects: list[dict], kind: str, name: str, namespace: str) -> dict:
    matches = [
        o
        for o in objects
        if o["kind"] == kind and o["metadata"]["name"] == name and o["metadata"].get("namespace") == namespace
    ]
    assert len(matches) == 1, f"expected one {kind} {namespace}/{name}, found {len(matches)}"
    return matches[0]


def only_container(objects: list[dict], service: str) -> dict:
    deployment = find(objects, "Deployment", service, "nexus")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict, objects: list[dict]) -> dict[str, Any]:
    """The container's environment: literal values as strings, secret references as
    ('secret', name, key), with envFrom ConfigMaps resolved from `objects`."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        if source["configMapRef"].get("optional") and not [
            o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == ref
        ]:
            continue  # an optional ConfigMap this set of objects does not have
        env.update(find(objects, "ConfigMap", ref, "nexus")["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = ("secret", ref["name"], ref["key"])
        else:
            env[var["name"]] = ("from", var["valueFrom"])
    return env


def quantity(value: str | int) -> float:
    """A Kubernetes resource quantity as a number (CPU in cores, memory in bytes)."""
    units = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([0-9.]+)(m|k|M|G|Ki|Mi|Gi|)", str(value))
    assert match, f"unparsed quantity {value!r}"
    return float(match[1]) * units[match[2]]


# ---------------------------------------------------------------- the tree itself


def test_every_manifest_under_k8s_is_applied(kustomized_files_of):
    """A YAML file no kustomization lists is never applied, and never validated here."""
    listed = set(kustomized_files_of(K8S))
    on_disk = {p.resolve() for p in K8S.rglob("*.y*ml") if p.name != "kustomization.yaml"}
    assert on_disk - listed == set()


def test_kustomize_matches_kubectl(all_objects):
    """Our kustomize in Python emits exactly what the real one does."""
    kubectl = need_tool("kubectl")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], check=True, capture_output=True, text=True).stdout
    theirs = [doc for doc in yaml.safe_load_all(out) if doc]

    def key(o: dict) -> tuple:
        return (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])

    assert sorted(theirs, key=key) == sorted(all_objects, key=key)


def test_kustomize_refuses_what_it_does_not_implement(kustomize_dir, tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: dev-\n")
    with pytest.raises(NotImplementedError):
        kustomize_dir(tmp_path)


# ---------------------------------------------------------------- schema


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_object_is_valid_kubernetes(k8s_object, version):
    """Strict: an unknown field (a typo) fails as well as a wrong type. A kind with no
    schema (a CRD) fails too: k8s/ must apply to a bare cluster."""
    try:
        kubernetes_validate.validate(k8s_object, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        pytest.fail(f"{path}: {e.message}")
    except kubernetes_validate.SchemaNotFoundError as e:
        pytest.fail(e.message)


def test_schema_validation_catches_a_misspelt_field(all_objects):
    deployment = find(all_objects, "Deployment", "core-api", "nexus")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


# ---------------------------------------------------------------- namespaces


def test_namespaces_enforce_the_restricted_pod_security_standard(all_objects):
    namespaces = {o["metadata"]["name"]: o for o in all_objects if o["kind"] == "Namespace"}
    assert set(namespaces) == NAMESPACES
    for ns in namespaces.values():
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_object_names_its_namespace(namespaced_object):
    """Without one, an object lands in whatever namespace kubectl's context points at."""
    assert namespaced_object["metadata"].get("namespace") in NAMESPACES


def test_cluster_scoped_objects_name_no_namespace(all_objects):
    cluster_scoped = [o for o in all_objects if o["kind"] in CLUSTER_SCOPED]
    assert cluster_scoped  # the namespaces at least
    assert [o["metadata"]["name"] for o in cluster_scoped if "namespace" in o["metadata"]] == []


def test_nothing_cluster_wide_is_granted(all_objects):
    assert [o["kind"] for o in all_objects if o["kind"] in {"ClusterRole", "ClusterRoleBinding"}] == []


# ---------------------------------------------------------------- containers


def test_container_has_the_restricted_security_context(container):
    pod_ctx = container.pod.spec.get("securityContext", {})
    ctx = container.spec.get("securityContext", {})

    def effective(field: str) -> Any:
        return ctx.get(field, pod_ctx.get(field))

    assert effective("runAsNonRoot") is True
    assert effective("runAsUser") != 0
    assert ctx.get("allowPrivilegeEscalation") is False
    assert ctx.get("readOnlyRootFilesystem") is True
    assert ctx.get("capabilities", {}).get("drop") == ["ALL"]
    assert not ctx.get("capabilities", {}).get("add")
    assert not ctx.get("privileged")
    assert (effective("seccompProfile") or {}).get("type") == "RuntimeDefault"


def test_container_has_resource_requests_and_limits(container):
    resources = container.spec.get("resources", {})
    for resource in ("cpu", "memory"):
        request = resources.get("requests", {}).get(resource)
        limit = resources.get("limits", {}).get(resource)
        assert request is not None and limit is not None, f"{resource}: requests {request}, limits {limit}"
        assert quantity(request) <= quantity(limit), f"{resource}: request {request} > limit {limit}"


def test_container_image_is_ours_or_pinned(container):
    image = container.spec["image"]
    if image in SERVICE_IMAGES.values():
        return  # tagged by Tilt or by an overlay's `images:`
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag and tag not in {"", "latest"}, f"{image} is not pinned to a version"


def test_pod_shares_nothing_with_its_node(pod):
    spec = pod.spec
    assert not any(spec.get(f) for f in ("hostNetwork", "hostPID", "hostIPC"))
    assert not [v for v in spec.get("volumes", []) if "hostPath" in v]


def test_a_read_only_container_has_a_writable_tmp(service_container):
    """Python, git and most tools write temporary files; / is read-only."""
    mounts = {m["mountPath"] for m in service_container.spec.get("volumeMounts", [])}
    assert "/tmp" in mounts


def test_the_quantity_parser_reads_what_the_manifests_use():
    assert quantity("250m") == 0.25
    assert quantity("1") == 1
    assert quantity("512Mi") == 512 * 2**20
    assert quantity("1Gi") > quantity("512Mi")


# ---------------------------------------------------------------- the services


def test_agent_runner_has_an_identity_but_no_deployment(all_objects):
    sa = find(all_objects, "ServiceAccount", "nexus-agent-runner", "nexus-agents")
    assert sa["automountServiceAccountToken"] is False
    images = {
        c["image"]
        for o in all_objects
        if o["kind"] in {"Deployment", "StatefulSet", "Job"}
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert RUNNER_IMAGE not in images


@pytest.mark.parametrize("service", SERVICE_IMAGES)
def test_service_runs_its_image_with_health_probes_on_9100(base_objects, service):
    deployment = find(base_objects, "Deployment", service, "nexus")
    container = only_container(base_objects, service)
    assert container["image"] == SERVICE_IMAGES[service]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == 9100

    def probe(kind: str) -> tuple[str, int]:
        http = container[kind]["httpGet"]
        port = http["port"]
        return http["path"], ports.get(port, port)

    assert probe("livenessProbe") == ("/healthz", 9100)
    assert probe("readinessProbe") == ("/readyz", 9100)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9100"


def test_core_api_serves_http_on_8080(base_objects):
    container = only_container(base_objects, "core-api")
    assert {"name": "http", "containerPort": 8080} in container["ports"]
    service = find(base_objects, "Service", "core-api", "nexus")
    assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} >= {(8080, "http"), (9100, "metrics")}


@pytest.mark.parametrize("service", SERVICE_IMAGES)
def test_service_is_configured_through_nexus_variables(base_objects, service):
    env = env_of(only_container(base_objects, service), base_objects)
    assert all(name.startswith("NEXUS_") for name in env), sorted(env)
    assert env["NEXUS_NATS_URL"].startswith("nats://")
    assert env["NEXUS_MONGODB_URL"].startswith("mongodb://")
    assert env["NEXUS_METRICS_PORT"] == "9100"


def test_worker_launches_runs_as_jobs_in_the_agent_namespace(base_objects):
    env = env_of(only_container(base_objects, "worker"), base_objects)
    assert env["NEXUS_RUNTIME"] == "kubernetes"
    assert env["NEXUS_AGENT_NAMESPACE"] == "nexus-agents"
    assert env["NEXUS_RUNNER_IMAGE"] == RUNNER_IMAGE


def test_secrets_come_from_a_secret(base_objects):
    assert env_of(only_container(base_objects, "telegram-gateway"), base_objects)["NEXUS_TELEGRAM_TOKEN"] == (
        "secret",
        "nexus-secrets",
        "NEXUS_TELEGRAM_TOKEN",
    )
    assert env_of(only_container(base_objects, "core-api"), base_objects)["NEXUS_ADMIN_KEY"] == (
        "secret",
        "nexus-secrets",
        "NEXUS_ADMIN_KEY",
    )
    for cm in (o for o in base_objects if o["kind"] == "ConfigMap"):
        assert not [k for k in cm["data"] if re.search("TOKEN|KEY|PASSWORD|SECRET", k)], cm["metadata"]["name"]


def test_only_the_worker_and_prometheus_get_a_kubernetes_api_token(pods):
    with_token = {p.owner["metadata"]["name"] for p in pods if p.spec.get("automountServiceAccountToken") is not False}
    assert with_token == {"worker", "prometheus"}


# ---------------------------------------------------------------- the worker's RBAC


def test_worker_role_is_namespaced_to_the_agents_with_exactly_its_verbs(all_objects):
    role = find(all_objects, "Role", "worker", "nexus-agents")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == WORKER_RULES


def test_worker_is_bound_to_its_role_and_nothing_else(all_objects):
    bindings = [
        b
        for b in all_objects
        if b["kind"] in {"RoleBinding", "ClusterRoleBinding"}
        and any(s.get("name") == "worker" and s.get("namespace") == "nexus" for s in b["subjects"])
    ]
    assert len(bindings) == 1
    (binding,) = bindings
    assert binding["kind"] == "RoleBinding"
    assert binding["metadata"]["namespace"] == "nexus-agents"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "worker"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "worker", "namespace": "nexus"}]
    worker = find(all_objects, "Deployment", "worker", "nexus")
    assert worker["spec"]["template"]["spec"]["serviceAccountName"] == "worker"
    find(all_objects, "ServiceAccount", "worker", "nexus")


# ---------------------------------------------------------------- references between objects


def test_pod_references_resolve(all_objects, pod):
    """ServiceAccounts, ConfigMaps and Secrets a pod names exist in its namespace, unless
    the reference is optional (the files Tilt loads from deploy/) or the object is one the
    operator creates (nexus-secrets: Tilt makes it in dev; see test_tiltfile)."""
    namespace = pod.owner["metadata"]["namespace"]
    present = {(o["kind"], o["metadata"]["name"]) for o in all_objects if o["metadata"].get("namespace") == namespace}
    present |= OPERATOR_PROVIDED

    def check(kind: str, ref: dict) -> None:
        if not ref.get("optional"):
            assert (kind, ref["name"]) in present, f"{kind} {namespace}/{ref['name']} does not exist"

    if "serviceAccountName" in pod.spec:
        check("ServiceAccount", {"name": pod.spec["serviceAccountName"]})
    for volume in pod.spec.get("volumes", []):
        if "configMap" in volume:
            check("ConfigMap", volume["configMap"])
        if "secret" in volume:
            check("Secret", {"name": volume["secret"]["secretName"], **volume["secret"]})
    for c in pod.spec["containers"]:
        for source in c.get("envFrom", []):
            for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if field in source:
                    check(kind, source[field])
        for var in c.get("env", []):
            for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if field in var.get("valueFrom", {}):
                    check(kind, var["valueFrom"][field])
        mounts = {m["name"] for m in c.get("volumeMounts", [])}
        volumes = {v["name"] for v in pod.spec.get("volumes", [])}
        templates = {t["metadata"]["name"] for t in pod.owner["spec"].get("volumeClaimTemplates", [])}
        assert mounts <= volumes | templates


def test_every_service_selects_pods_and_their_ports(all_objects, pods):
    for service in (o for o in all_objects if o["kind"] == "Service"):
        namespace = service["metadata"]["namespace"]
        selector = service["spec"]["selector"]
        selected = [
            p
            for p in pods
            if p.owner["metadata"]["namespace"] == namespace
            and selector.items() <= p.owner["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        ports = {port["name"] for p in selected for c in p.spec["containers"] for port in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{service['metadata']['name']}: no container port {port['targetPort']}"


def test_workload_selector_matches_its_template(controller_pod):
    selector = controller_pod.owner["spec"]["selector"]["matchLabels"]
    assert selector.items() <= controller_pod.owner["spec"]["template"]["metadata"]["labels"].items()


# ---------------------------------------------------------------- overlays


def _overlay(name: str) -> list[dict]:
    kubectl = need_tool("kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / name)], check=True, capture_output=True, text=True
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_an_overlay_renders_valid_objects(overlay):
    for obj in _overlay(overlay):
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[0], strict=True)


def test_prod_runs_streams_at_three_replicas_on_its_own_servers_and_pins_images():
    objs = _overlay("prod")
    (config,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "nexus-config"]
    assert config["data"]["NEXUS_JETSTREAM_REPLICAS"] == "3"
    assert (
        "w=majority" in config["data"]["NEXUS_MONGODB_URL"]
        and "retryWrites=true" in config["data"]["NEXUS_MONGODB_URL"]
    )
    assert not [
        o
        for o in objs
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/name") in {"nats", "mongodb", "grafana"}
    ]
    images = {
        c["image"] for o in objs if o["kind"] == "Deployment" for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert images and all(":" in i and not i.endswith(":latest") and "/" in i for i in images), images
    (ingress,) = [o for o in objs if o["kind"] == "Ingress"]
    assert ingress["spec"]["tls"][0]["secretName"] == "nexus-api-tls"


def test_dev_runs_streams_at_one_replica_with_its_own_servers():
    objs = _overlay("dev")
    (config,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "nexus-config"]
    assert config["data"]["NEXUS_JETSTREAM_REPLICAS"] == "1"
    assert {"nats", "mongodb", "otel-collector"} <= {
        o["metadata"].get("labels", {}).get("app.kubernetes.io/name") for o in objs
    }
    (telemetry,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "nexus-telemetry"]
    (collector,) = [o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "otel-collector"]
    assert (
        telemetry["data"]["NEXUS_OTLP_ENDPOINT"]
        == f"http://otel-collector.nexus.svc.cluster.local:{collector['spec']['ports'][0]['port']}"
    )
    for service in ("core-api", "worker", "board-sync", "telegram-gateway"):  # each reads it
        (deploy,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == service]
        assert {"configMapRef": {"name": "nexus-telemetry", "optional": True}} in deploy["spec"]["template"]["spec"][
            "containers"
        ][0]["envFrom"]


def test_agent_pods_reach_only_nats_dns_and_outside_hosts(all_objects):
    policies = [o for o in all_objects if o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == "nexus-agents"]
    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") and not p["spec"].get("egress")
    ]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert not [p for p in policies if p["spec"].get("ingress")]  # nothing may connect to a run pod
    rules = [r for p in policies for r in p["spec"].get("egress", [])]
    ports = {(r["to"][0].get("ipBlock") is not None, port["port"]) for r in rules for port in r["ports"]}
    assert ports == {(False, 4222), (False, 53), (True, 443), (True, 22), (False, 4318)}
    (otlp,) = [r for r in rules if any(p["port"] == 4318 for p in r["ports"])]  # spans, to the dev collector only
    assert otlp["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "nexus"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "otel-collector"}},
        }
    ]
    for r in rules:
        for peer in r["to"]:
            if "ipBlock" in peer:  # outside only: every private range is excluded
                assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(
                    peer["ipBlock"]["except"]
                )


def test_core_api_and_worker_survive_a_drain_and_scale(all_objects):
    for name in ("core-api", "worker"):
        (pdb,) = [o for o in all_objects if o["kind"] == "PodDisruptionBudget" and o["metadata"]["name"] == name]
        (hpa,) = [o for o in all_objects if o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"] == name]
        (deploy,) = [o for o in all_objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
        assert (
            pdb["spec"]["selector"]["matchLabels"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
        )
        assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"] <= deploy["spec"]["replicas"]
        assert hpa["spec"]["scaleTargetRef"]["name"] == name

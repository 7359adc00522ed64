"""The Tiltfile, run without Tilt: its Starlark is also Python, so it is executed here
against stand-ins for Tilt's builtins that record what it asks for. The tests then
check that what `tilt up` would build and apply fits together: an image for every
workload, Dockerfiles and targets that exist, live_update paths that match the image
layout, port forwards for core-api and Grafana, and the dev-only relaxations."""

import copy
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LIVE_SERVICES = ["core-api", "worker", "board-sync", "telegram-gateway"]


@dataclass
class TiltRun:
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: list[dict] = field(default_factory=list)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_tiltfile(kustomize, env: dict[str, str]) -> TiltRun:
    out = TiltRun()

    def docker_build(ref, context, **kwargs):
        assert ref not in out.builds, f"{ref} built twice"
        out.builds[ref] = {"context": context, **kwargs}

    def docker_build_with_restart(ref, context, entrypoint, live_update, **kwargs):
        docker_build(ref, context, entrypoint=entrypoint, live_update=live_update, restart=True, **kwargs)

    def k8s_resource(workload, **kwargs):
        assert workload not in out.resources, f"k8s_resource({workload!r}) twice"
        out.resources[workload] = kwargs

    def listdir(path, recursive=False):
        base = Path(path)
        found = base.rglob("*") if recursive else base.iterdir()
        return sorted(str(p) for p in found if p.is_file())

    builtins = {
        "os": SimpleNamespace(
            getenv=lambda key, default=None: env.get(key, default),
            path=SimpleNamespace(join=os.path.join, basename=os.path.basename, exists=os.path.exists),
        ),
        "config": SimpleNamespace(main_dir=str(REPO)),
        "docker_build": docker_build,
        "k8s_resource": k8s_resource,
        "k8s_yaml": lambda text, **kw: out.objects.extend(d for d in yaml.safe_load_all(text) if d),
        "kustomize": lambda path, **kw: yaml.safe_dump_all(kustomize(Path(path))),
        "decode_yaml_stream": lambda text: [d for d in yaml.safe_load_all(text) if d],
        "encode_yaml_stream": yaml.safe_dump_all,
        "encode_yaml": yaml.safe_dump,
        "read_file": lambda path: Path(path).read_text(),
        "listdir": listdir,
        "sync": lambda src, dest: ("sync", src, dest),
        "run": lambda cmd, **kw: ("run", cmd),
        "fall_back_on": lambda files: ("fall_back_on", files),
        "print": lambda *args: None,
        # Tilt runs the command; here the same generator runs with this interpreter.
        "local": lambda cmd, **kw: (
            subprocess.run(
                cmd.replace("uv run --frozen python", sys.executable),
                shell=True,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        ),
    }
    extensions = {"ext://restart_process": {"docker_build_with_restart": docker_build_with_restart}}

    def execute(path: Path) -> dict[str, Any]:
        namespace = dict(builtins)

        def load(module, *symbols):
            if module.startswith("ext://"):
                exported = extensions[module]
            else:
                exported = execute(path.parent / module)
            for symbol in symbols:
                namespace[symbol] = exported[symbol]

        namespace["load"] = load
        exec(compile(path.read_text(), str(path), "exec"), namespace)
        return namespace

    execute(REPO / "Tiltfile")
    return out


@pytest.fixture(scope="module")
def tilt(kustomize_dir) -> TiltRun:
    return run_tiltfile(kustomize_dir, env={})


def images_in(objects: list[dict]) -> tuple[set[str], set[str]]:
    """Container images, and values of env variables (where match_in_env_vars looks)."""
    images, env_values = set(), set()
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet", "Job"}:
            for c in obj["spec"]["template"]["spec"]["containers"]:
                images.add(c["image"])
                env_values.update(e["value"] for e in c.get("env", []) if "value" in e)
    return images, env_values


def key(obj: dict) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def test_every_service_image_is_built_and_used(tilt):
    images, env_values = images_in(tilt.objects)
    ours = {i for i in images if i.startswith("nexus-")}
    built = set(tilt.builds)
    assert built == {f"nexus-{s}" for s in [*LIVE_SERVICES, "agent-runner"]}
    assert ours <= built
    for ref, build in tilt.builds.items():
        if build.get("match_in_env_vars"):
            assert ref in env_values, f"{ref} is matched in env vars, but no env var names it"
        else:
            assert ref in images, f"{ref} is built but no container runs it"


def test_builds_use_the_repository_root_and_existing_dockerfiles(tilt):
    for ref, build in tilt.builds.items():
        service = ref.removeprefix("nexus-")
        assert Path(build["context"]) == REPO
        dockerfile = Path(build["dockerfile"])
        assert dockerfile == REPO / "deploy" / "docker" / f"{service}.Dockerfile"
        assert set(build["only"]) == {"pyproject.toml", "uv.lock", "libs", f"services/{service}"}
        assert all((REPO / p).exists() for p in build["only"])
        if "target" in build:
            assert f" AS {build['target']}" in dockerfile.read_text()


@pytest.mark.parametrize("service", LIVE_SERVICES)
def test_live_update_syncs_sources_where_the_image_has_them(tilt, service):
    build = tilt.builds[f"nexus-{service}"]
    assert build["restart"] and build["target"] == "dev"
    assert build["entrypoint"] == [f"nexus-{service}"]
    assert build["restart_file"].startswith("/app/"), "/tmp is an emptyDir in the pod: the file would vanish"
    steps = build["live_update"]
    assert steps[0][0] == "fall_back_on", "fall_back_on must come first"
    fallbacks = {str(Path(f).relative_to(REPO)) if Path(f).is_absolute() else f for f in steps[0][1]}
    assert {"pyproject.toml", "uv.lock", f"services/{service}/pyproject.toml"} <= fallbacks
    assert {str(p.relative_to(REPO)) for p in (REPO / "libs").glob("*/pyproject.toml")} <= fallbacks
    syncs = {(src, dest) for kind, src, dest in steps[1:] if kind == "sync"}
    assert syncs == {("libs", "/app/libs"), (f"services/{service}", f"/app/services/{service}")}


def test_applies_k8s_and_only_relaxes_the_read_only_root_of_live_updated_containers(tilt, all_objects):
    applied = {key(o): o for o in tilt.objects}
    for obj in all_objects:
        expected = copy.deepcopy(obj)
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] in LIVE_SERVICES:
            for c in expected["spec"]["template"]["spec"]["containers"]:
                c["securityContext"]["readOnlyRootFilesystem"] = False
        assert applied[key(obj)] == expected, f"{key(obj)} differs from k8s/"


def test_loads_dashboards_rules_and_secrets_the_pods_look_for(tilt):
    applied = {key(o): o for o in tilt.objects}
    dashboards = applied[("ConfigMap", "nexus", "grafana-dashboards")]["data"]
    assert set(dashboards) == {p.name for p in (REPO / "deploy/grafana/dashboards").glob("*.json")}
    rules = applied[("ConfigMap", "nexus", "prometheus-rules")]["data"]
    assert rules == {"rules.yml": (REPO / "deploy/prometheus/rules.yml").read_text()}
    secret = applied[("Secret", "nexus", "nexus-secrets")]
    assert set(secret["stringData"]) == {"NEXUS_ADMIN_KEY"}, "an unset Telegram token must stay out"
    for generated in ("grafana-dashboards", "prometheus-rules"):
        kubernetes_validate.validate(applied[("ConfigMap", "nexus", generated)], "1.30", strict=True)
    kubernetes_validate.validate(secret, "1.30", strict=True)


def test_a_telegram_token_in_the_environment_reaches_the_secret(kustomize_dir):
    run = run_tiltfile(kustomize_dir, env={"NEXUS_TELEGRAM_TOKEN": "123:abc", "NEXUS_ADMIN_KEY": "k"})
    (secret,) = [o for o in run.objects if key(o) == ("Secret", "nexus", "nexus-secrets")]
    assert secret["stringData"] == {"NEXUS_ADMIN_KEY": "k", "NEXUS_TELEGRAM_TOKEN": "123:abc"}


def test_port_forwards_core_api_and_grafana(tilt):
    forwards = {name: r.get("port_forwards", []) for name, r in tilt.resources.items()}
    assert "8080:8080" in forwards["core-api"]
    assert "3000:3000" in forwards["grafana"]


def test_resources_name_workloads_that_exist(tilt):
    workloads = {o["metadata"]["name"] for o in tilt.objects if o["kind"] in {"Deployment", "StatefulSet", "Job"}}
    assert set(tilt.resources) <= workloads
    assert set(LIVE_SERVICES) <= set(tilt.resources)
    for name, resource in tilt.resources.items():
        assert set(resource.get("resource_deps", [])) <= set(tilt.resources), name


def test_nats_authorization_is_generated_for_what_the_pods_mount(tilt):
    """Every NATS credential Secret a pod mounts, and the server's auth config, comes from the generator."""
    applied = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in tilt.objects}
    for service in LIVE_SERVICES:
        secret = applied[("Secret", "nexus", f"nexus-nats-{service}")]
        assert set(secret["data"]) == {"nats.creds"}
        kubernetes_validate.validate(secret, "1.30", strict=True)
        deployment = applied[("Deployment", "nexus", service)]
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["nats-creds"]["secret"]["secretName"] == f"nexus-nats-{service}"
    assert set(applied[("Secret", "nexus", "nexus-nats-config")]["data"]) == {"auth.conf"}
    assert set(applied[("Secret", "nexus", "nexus-nats-run-signer")]["data"]) == {"run-signer"}
    assert ("Secret", "nexus", "nexus-nats-tools") not in applied  # the tests' all-powerful user stays out of clusters

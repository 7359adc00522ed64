"""The service images, built from their Dockerfiles (scripts/images.sh) and started as containers:
each runs as a non-root user on a read-only root filesystem, answers /readyz and serves /metrics
against the real NATS and FerretDB, and one scripted run goes through the containers (core-api, and
the worker with the local runtime running agent-runner beside it) to success.

Run with `make test-images` (it builds first; building the bases from Debian's packages takes
minutes the first time)."""

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nexus.dev.servers import free_ports

pytestmark = [pytest.mark.images, pytest.mark.infra]

REPO = Path(__file__).resolve().parents[2]
SERVICES = ["core-api", "worker", "board-sync", "telegram-gateway"]
TAG = "dev"
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="session")
def images() -> dict[str, int]:
    out = subprocess.run([str(REPO / "scripts" / "images.sh")], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-4000:]
    sizes = {line.split()[0]: int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("nexus-")}
    print("IMAGE SIZES (MB):", {k: round(v / 1e6) for k, v in sizes.items()})
    return sizes


@pytest.fixture(scope="session")
def container_auth(nats_auth, tmp_path_factory) -> Path | None:
    """The test server's NATS credentials, readable by the images' uid (mounted read-only at /auth)."""
    if nats_auth is None:
        return None
    out = tmp_path_factory.mktemp("auth")
    for f in Path(nats_auth).iterdir():
        if f.is_file():
            (out / f.name).write_bytes(f.read_bytes())
            (out / f.name).chmod(0o644)
    out.chmod(0o755)
    return out


def _auth_env(auth: Path | None, service: str) -> dict[str, str]:
    if auth is None:
        return {}
    env = {"NEXUS_NATS_CREDS": f"/auth/{service}.creds"}
    if service == "worker":
        env["NEXUS_NATS_RUN_SIGNER_FILE"] = "/auth/run-signer"
    return env


AUTH_DIR: list[Path] = []


def _run(image: str, name: str, env: dict[str, str], *cmd: str) -> str:
    args = [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp:exec,mode=1777",
        "--security-opt",
        "no-new-privileges",
        "--cap-drop",
        "ALL",
    ]
    if AUTH_DIR:
        args += ["-v", f"{AUTH_DIR[0]}:/auth:ro"]
        env = {**_auth_env(AUTH_DIR[0], image), **env}
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    return docker(*args, f"nexus-{image}:{TAG}", *cmd).stdout.strip()


@pytest.fixture
def containers() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        logs = docker("logs", "--tail", "80", name, check=False)
        print(f"----- {name} -----\n{logs.stdout}{logs.stderr}")
        docker("rm", "-f", name, check=False)


def _wait_ok(url: str, name: str) -> httpx.Response:
    for _ in range(300):  # a bound on attempts, not on time
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == 200:
                return r
        except httpx.TransportError:
            pass
        state = json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)
        assert state["Running"], f"{name} exited: {state}"
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered 200")


def test_every_image_starts_non_root_read_only_and_serves_its_ops_port(
    images, containers, nats_url, mongo_url, container_auth
) -> None:
    AUTH_DIR[:] = [container_auth] if container_auth else []
    db = f"img_{uuid.uuid4().hex[:8]}"
    ports = free_ports(len(SERVICES) + 1)
    for service, port in zip(SERVICES, ports, strict=False):
        name = f"nexus-test-{service}-{uuid.uuid4().hex[:6]}"
        containers.append(name)
        env = {
            "NEXUS_NATS_URL": nats_url,
            "NEXUS_MONGODB_URL": mongo_url,
            "NEXUS_MONGODB_DB": db,
            "NEXUS_METRICS_PORT": str(port),
            "NEXUS_HTTP_PORT": str(ports[-1]),
            "NEXUS_HTTP_HOST": "127.0.0.1",
            "NEXUS_ADMIN_KEY": "nxk_images_" + uuid.uuid4().hex,
        }
        _run(service, name, env)
        _wait_ok(f"http://127.0.0.1:{port}/readyz", name)
        metrics = _wait_ok(f"http://127.0.0.1:{port}/metrics", name)
        assert "# TYPE" in metrics.text
        assert docker("exec", name, "id", "-u").stdout.strip() == "10001", service
        touched = docker("exec", name, "touch", "/app/x", check=False)
        assert touched.returncode != 0 and "Read-only file system" in touched.stderr, service


def test_the_runner_image_has_what_a_run_needs(images) -> None:
    out = docker(
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/tmp",
        f"nexus-agent-runner:{TAG}",
        "sh",
        "-c",
        "id -u && git --version && python -c 'import nexus.agent_runner.main'",
        check=False,
    )
    # The entry point is the runner; `sh -c` goes through it only when the image allows it.
    if out.returncode != 0:
        out = docker(
            "run",
            "--rm",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--entrypoint",
            "sh",
            f"nexus-agent-runner:{TAG}",
            "-c",
            "id -u && git --version && python -c 'import nexus.agent_runner.main'",
        )
    lines = out.stdout.splitlines()
    assert lines[0] == "10001" and lines[1].startswith("git version")


def test_a_scripted_run_goes_through_the_containers(images, containers, nats_url, mongo_url, container_auth) -> None:
    AUTH_DIR[:] = [container_auth] if container_auth else []
    db = f"img_{uuid.uuid4().hex[:8]}"
    http_port, core_ops, worker_ops = free_ports(3)
    admin = "nxk_images_" + uuid.uuid4().hex
    common = {
        "NEXUS_NATS_URL": nats_url,
        "NEXUS_MONGODB_URL": mongo_url,
        "NEXUS_MONGODB_DB": db,
        "NEXUS_ADMIN_KEY": admin,
        "NEXUS_LOG_FORMAT": "json",
    }
    core, worker = f"nexus-test-core-{uuid.uuid4().hex[:6]}", f"nexus-test-worker-{uuid.uuid4().hex[:6]}"
    containers.extend([core, worker])
    _run(
        "core-api",
        core,
        {
            **common,
            "NEXUS_HTTP_PORT": str(http_port),
            "NEXUS_HTTP_HOST": "127.0.0.1",
            "NEXUS_METRICS_PORT": str(core_ops),
        },
    )
    _run("worker", worker, {**common, "NEXUS_METRICS_PORT": str(worker_ops), "NEXUS_RUNTIME": "local"})
    _wait_ok(f"http://127.0.0.1:{core_ops}/readyz", core)
    _wait_ok(f"http://127.0.0.1:{worker_ops}/readyz", worker)
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{http_port}", headers={"Authorization": f"Bearer {admin}"}, timeout=30
    )
    r = api.post(
        "/v1/agents",
        json={
            "name": "img",
            "system_prompt": "t",
            "tools": ["note", "finish"],
            "llm": {
                "provider": "scripted",
                "script": "steps:\n  - tool_calls: [{name: note, args: {message: from a container}}]\n  - say: done\n",
            },
        },
    )
    assert r.status_code == 201, r.text
    run_id = api.post("/v1/tasks", json={"title": "in containers", "assignee": "img"}).json()["current_run_id"]
    run: dict = {}
    for _ in range(600):  # a bound on polls
        run = api.get(f"/v1/runs/{run_id}").json()
        if run["status"] in ("succeeded", "failed", "cancelled", "timed_out"):
            break
        time.sleep(0.2)
    assert run["status"] == "succeeded", run
    notes = [c["message"] for s in run["sessions"] for c in s["changes"] if c["type"] == "note"]
    assert notes == ["from a container"]

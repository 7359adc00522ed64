"""deploy/docker: one image per service, installed with uv from the committed lock, run
as a non-root user. No Docker engine here, so the Dockerfiles are read, not built: what
is checked is what a build would trip over (a package or entry point that does not
exist, a workspace dependency left out of the context) and what a review would."""

import fnmatch
import json
import re
import tomllib
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"
SERVICES = ["core-api", "worker", "agent-runner", "board-sync", "telegram-gateway"]
PYTHON_IMAGE = "python:3.11-slim"


class Stage(NamedTuple):
    name: str
    base: str
    instructions: list[tuple[str, str]]


def parse(dockerfile: Path) -> list[Stage]:
    """Stages in order, with `${ARG}`s in FROM resolved to the ARG defaults."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], rest)
            parts = re.split(r"\s+as\s+", image, flags=re.IGNORECASE)
            base, name = parts[0], parts[1] if len(parts) > 1 else f"#{len(stages)}"
            stages.append(Stage(name, base, []))
        else:
            stages[-1].instructions.append((keyword, rest))
    return stages


def chain(stages: list[Stage], stage: Stage) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    by_name = {s.name: s for s in stages}
    out = [stage]
    while out[-1].base in by_name:
        out.append(by_name[out[-1].base])
    return out


def last(stages: list[Stage], stage: Stage, keyword: str) -> str | None:
    for s in chain(stages, stage):
        for kw, rest in reversed(s.instructions):
            if kw == keyword:
                return rest
    return None


def runs(stages: list[Stage], stage: Stage) -> list[str]:
    return [rest for s in chain(stages, stage) for kw, rest in s.instructions if kw == "RUN"]


def project(service: str) -> dict:
    return tomllib.loads((REPO / "services" / service / "pyproject.toml").read_text())["project"]


def workspace_paths(package: str) -> set[str]:
    """The workspace members `uv sync --no-dev --package <package>` installs, as paths."""
    lock = {p["name"]: p for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]}
    todo, seen, paths = [package], set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        pkg = lock[name]
        if "editable" in pkg["source"]:
            paths.add(pkg["source"]["editable"])
        todo.extend(dep["name"] for dep in pkg.get("dependencies", []))
    return paths


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether a .dockerignore excludes `path` (last matching pattern wins; a pattern
    matching a parent directory matches the path)."""
    prefixes = [str(Path(*Path(path).parts[: i + 1])) for i in range(len(Path(path).parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
            excluded = not negated
    return excluded


@pytest.fixture(params=SERVICES)
def service(request) -> str:
    return request.param


@pytest.fixture
def stages(service) -> list[Stage]:
    return parse(DOCKER / f"{service}.Dockerfile")


def test_the_parser_reads_stages_and_resolves_args(tmp_path):
    dockerfile = tmp_path / "x.Dockerfile"
    dockerfile.write_text("ARG IMG=python:3.11-slim\nFROM ${IMG} AS a\nRUN echo \\\n  hi\nFROM a\nUSER 10\n")
    a, b = parse(dockerfile)
    assert a == Stage("a", "python:3.11-slim", [("RUN", "echo    hi")])
    assert last([a, b], b, "USER") == "10" and chain([a, b], b) == [b, a]


def test_images_start_from_python_slim(stages):
    """The build stage and the runtime stage share one interpreter path, which the
    virtualenv copied between them depends on."""
    names = {s.name for s in stages}
    python_stages = [s for s in stages if s.base not in names and not s.base.startswith("ghcr.io/astral-sh/uv")]
    assert len(python_stages) >= 2
    assert {s.base for s in python_stages} == {PYTHON_IMAGE}


def test_uv_image_is_pinned(stages):
    (uv,) = [s.base for s in stages if s.base.startswith("ghcr.io/astral-sh/uv")]
    assert re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", uv)


def test_installs_the_service_package_from_the_lock(service, stages):
    package = project(service)["name"]
    syncs = [r for s in stages for r in runs(stages, s) if "uv sync" in r]
    assert syncs, "no uv sync"
    for command in syncs:
        assert "--frozen" in command and "--no-dev" in command and f"--package {package}" in command
    assert any("--no-install-workspace" not in c for c in syncs), "the workspace packages are never installed"


def test_copies_every_workspace_member_the_package_needs(service, stages):
    """uv sync --frozen fails on a workspace dependency missing from the image."""
    copied = {
        src.rstrip("/")
        for s in stages
        for kw, rest in s.instructions
        if kw == "COPY" and "--from=" not in rest
        for src in rest.split()[:-1]
        if not src.startswith("--")
    }
    for member in workspace_paths(project(service)["name"]):
        assert any(member == c or member.startswith(c + "/") for c in copied), f"{member} is not copied"
    for src in copied:
        assert (REPO / src).exists(), f"COPY {src}: no such path in the repository"


def test_dockerignore_sends_what_the_image_copies(service, stages):
    ignore = DOCKER / f"{service}.Dockerfile.dockerignore"
    patterns = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
    for src in ("pyproject.toml", "uv.lock", "libs", f"services/{service}"):
        assert not ignored(src, patterns), src
    for heavy in (".venv", ".git", ".nexus", "libs/domain/src/nexus/__pycache__"):
        assert ignored(heavy, patterns), heavy


def test_default_target_runs_the_entry_point_as_a_non_root_user(service, stages):
    final = stages[-1]
    entrypoint = json.loads(last(stages, final, "ENTRYPOINT"))
    scripts = project(service)["scripts"]
    assert entrypoint == [f"nexus-{service}"] and entrypoint[0] in scripts
    user = last(stages, final, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: Kubernetes can only verify a numeric non-root user"
    assert "dev" not in {s.name for s in chain(stages, final)}, "the default target must be the production image"


def test_exposes_its_ports(service, stages):
    exposed = set((last(stages, stages[-1], "EXPOSE") or "").split())
    expected = {"core-api": {"8080", "9100"}, "agent-runner": set()}.get(service, {"9100"})
    assert exposed == expected


def test_agent_runner_image_has_git():
    stages = parse(DOCKER / "agent-runner.Dockerfile")
    assert any(re.search(r"apt-get install .*\bgit\b", r) for r in runs(stages, stages[-1]))


def test_dev_target_lets_live_update_write_the_sources():
    for service in ("core-api", "worker", "board-sync", "telegram-gateway"):
        stages = parse(DOCKER / f"{service}.Dockerfile")
        (dev,) = [s for s in stages if s.name == "dev"]
        assert any("chown" in r and "/app/libs" in r and "/app/services" in r for r in runs(stages, dev))

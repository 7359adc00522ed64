"""Each image's dependency set, proven: the build context its Dockerfile copies is assembled, its
last `uv sync` is run as the Dockerfile runs it (same flags, its own fresh environment), and every
module of the service is imported there. A distribution the code imports but the package does not
declare fails here, as it would when the image starts, even though the development environment
(with every package installed) never shows it."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.test_dockerfiles import DOCKER, SERVICES, parse, runs

REPO = Path(__file__).resolve().parents[2]
UV = shutil.which("uv") or str(Path.home() / ".local/bin/uv")

IMPORT_ALL = """
import importlib, pkgutil, sys
failed = []
for top in sys.argv[1:]:
    package = importlib.import_module(top)
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # an entry point runs when imported
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            failed.append(f"{info.name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def _context(service: str, into: Path) -> list[str]:
    """Copy what the Dockerfile copies from the repository; return its last `uv sync` argv."""
    stages = parse(DOCKER / f"{service}.Dockerfile")
    build = stages[0] if stages[0].name == "build" else next(s for s in stages if s.name == "build")
    for keyword, rest in build.instructions:
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                src = REPO / source
                if src.is_dir():
                    shutil.copytree(src, into / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy2(src, into / source)
    sync = [r for r in runs(stages, build) if "uv sync" in r][-1]
    return re.search(r"uv sync[^;&]*", sync).group(0).split()[1:]  # type: ignore[union-attr]  # found above


@pytest.mark.parametrize("service", SERVICES)
def test_every_module_of_the_image_imports_in_the_environment_its_dockerfile_builds(
    service: str, tmp_path: Path
) -> None:
    sync = _context(service, tmp_path)
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(tmp_path / ".venv"),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_PYTHON": sys.executable,
        "VIRTUAL_ENV": "",
    }
    done = subprocess.run([UV, "sync", *sync[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    packages = [
        p.removeprefix("nexus-").replace("-", "_") for p in sync[sync.index("--package") + 1 :] if not p.startswith("-")
    ]
    tops = [f"nexus.{p}" for p in packages]
    imported = subprocess.run(
        [str(tmp_path / ".venv/bin/python"), "-c", IMPORT_ALL, *tops],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )
    assert imported.returncode == 0, (
        f"modules that do not import in the {service} image:\n{imported.stdout}{imported.stderr[-2000:]}"
    )

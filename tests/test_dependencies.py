"""Import contracts, read from the code itself (every import, function-local ones included):

- each workspace package declares, in its own pyproject, every distribution its code imports
  (an image built with `uv sync --package <it>` has exactly those, so a missing one is a crash
  at start in production that a development venv with everything installed never shows);
- libs never import a service; the domain imports nothing of ours but itself;
- no service imports another service, except the one edge the design has: the worker's local
  runtime hosts runners, and its warm zygote imports agent-runner to fork them.
"""

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_SERVICE_EDGES = {("nexus-worker", "nexus-agent-runner")}
PACKAGE_DIRS = sorted(p.parent for p in ROOT.glob("*/*/pyproject.toml"))
# Imported only under `if TYPE_CHECKING:` or by tests of the package: nothing to declare.
_PY_DIST = packages_distributions()


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _project(pkg_dir: Path) -> dict:
    return tomllib.loads((pkg_dir / "pyproject.toml").read_text())["project"]


def _declared(pkg_dir: Path) -> set[str]:
    deps = set()
    for spec in _project(pkg_dir).get("dependencies", []):
        name = spec.split(";")[0].split("[")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        deps.add(_norm(name))
    return deps


def _workspace_modules() -> dict[str, str]:
    """`nexus.db` → `nexus-db`: which workspace distribution provides each `nexus.*` package."""
    out = {}
    for pkg_dir in PACKAGE_DIRS:
        for sub in (pkg_dir / "src" / "nexus").iterdir() if (pkg_dir / "src" / "nexus").is_dir() else ():
            if sub.is_dir() and (sub / "__init__.py").exists():
                out[f"nexus.{sub.name}"] = _norm(_project(pkg_dir)["name"])
    return out


WORKSPACE = _workspace_modules()


def _imports(pkg_dir: Path) -> dict[str, set[str]]:
    """Every imported module name → the files importing it (relative imports excluded)."""
    found: dict[str, set[str]] = {}
    for path in (pkg_dir / "src").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def _distribution_of(module: str) -> str | None:
    """None for the standard library; the workspace or PyPI distribution otherwise."""
    parts = module.split(".")
    if parts[0] == "nexus" and len(parts) > 1:
        return WORKSPACE.get(f"nexus.{parts[1]}", f"<unknown nexus.{parts[1]}>")
    top = parts[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return None
    dists = _PY_DIST.get(top)
    if not dists:
        return f"<not installed: {top}>"
    if len(set(dists)) > 1:  # a namespace several distributions share (opentelemetry.*): the one holding the module
        return _MODULE_FILES.get(module) or _norm(dists[0])
    return _norm(dists[0])


def _module_files() -> dict[str, str]:
    """`opentelemetry.sdk.trace` → `opentelemetry-sdk`: which distribution installed each module's file."""
    from importlib.metadata import distributions

    out = {}
    for dist in distributions():
        for file in dist.files or ():
            name = str(file)
            if name.endswith(".py"):
                out.setdefault(name[:-3].replace("/", ".").removesuffix(".__init__"), _norm(dist.metadata["Name"]))
    return out


_MODULE_FILES = _module_files()


def _ids(dirs):
    return [str(d.relative_to(ROOT)) for d in dirs]


@pytest.mark.parametrize("pkg_dir", PACKAGE_DIRS, ids=_ids(PACKAGE_DIRS))
def test_every_imported_distribution_is_declared(pkg_dir: Path) -> None:
    own = _norm(_project(pkg_dir)["name"])
    declared = _declared(pkg_dir)
    missing = {}
    for module, files in _imports(pkg_dir).items():
        dist = _distribution_of(module)
        if dist is None or dist == own or dist in declared:
            continue
        missing.setdefault(dist, set()).update(files)
    assert not missing, f"{own} imports undeclared distributions: " + "; ".join(
        f"{d} (in {', '.join(sorted(f)[:3])})" for d, f in sorted(missing.items())
    )


def _layer(pkg_dir: Path) -> str:
    return pkg_dir.parent.name  # libs / services / clients / tools


@pytest.mark.parametrize("pkg_dir", PACKAGE_DIRS, ids=_ids(PACKAGE_DIRS))
def test_layers_are_respected(pkg_dir: Path) -> None:
    own = _norm(_project(pkg_dir)["name"])
    services = {d for p, d in ((p, _norm(_project(p)["name"])) for p in PACKAGE_DIRS) if _layer(p) == "services"}
    wrong = []
    for module, files in _imports(pkg_dir).items():
        dist = _distribution_of(module)
        if dist is None or not dist.startswith("nexus") or dist == own:
            continue
        if _layer(pkg_dir) == "libs" and dist in services:
            wrong.append(f"a lib imports the service {dist} ({sorted(files)[0]})")
        if own == "nexus-domain":
            wrong.append(f"the domain imports {dist} ({sorted(files)[0]})")
        if _layer(pkg_dir) == "services" and dist in services and (own, dist) not in ALLOWED_SERVICE_EDGES:
            wrong.append(f"service {own} imports service {dist} ({sorted(files)[0]})")
    assert not wrong, "; ".join(wrong)


def test_the_contracts_see_real_imports() -> None:
    """The checks above are only as good as the import scan: it must find function-local imports."""
    worker = next(d for d in PACKAGE_DIRS if d.name == "worker")
    found = _imports(worker)
    assert any(m.startswith("nexus.db") for m in found)
    assert _distribution_of("nexus.db.documents") == "nexus-db"
    assert _distribution_of("os") is None
    assert _distribution_of("msgspec") == "msgspec"


# ---------------------------------------------------------------- core-api's features
CORE_API = ROOT / "services" / "core-api" / "src" / "nexus" / "core_api"
WORKFLOW = "workflow"  # the run workflow: the one package that composes features
PLATFORM = {"auth", "audit"}  # who acts and the trail of what they did: every feature's, importing none
SHAPES = {"schemas", "stream", "columns"}  # a feature's data shapes and read-only feeds
EDGES = {"routes", "handlers", "webhooks", "responder"}  # a feature's doors: HTTP and NATS handlers


def _core_api_features(root: Path = CORE_API) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()}


def _core_api_imports(root: Path = CORE_API) -> list[tuple[str, str, str]]:
    """(importing module, imported module, how) for every core-api-internal import, function-local
    ones included (how: "top" or "local"); modules as paths under core_api, dotted."""
    out = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        tree = ast.parse(path.read_text(), str(path))
        local = {
            id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "nexus.core_api":
                    names = [f"nexus.core_api.{a.name}" for a in node.names]
                else:  # `from nexus.core_api.tasks import service` imports the module tasks.service
                    names = [
                        f"{node.module}.{a.name}"
                        if (root / Path(*node.module.split(".")[2:]) / f"{a.name}.py").exists()
                        else node.module
                        for a in node.names
                    ]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("nexus.core_api."):
                    out.append((module, name.removeprefix("nexus.core_api."), "local" if id(node) in local else "top"))
    return out


def feature_violations(root: Path = CORE_API) -> list[str]:
    """A module of a feature may import of another feature only its shapes and read feeds, the
    platform features, or a leaf feature (one whose own non-door modules use no other feature's);
    composing features that are not leaves is the run workflow's alone. And nothing the workflow
    uses may use the workflow (it would close a cycle through it)."""
    features = _core_api_features(root)
    imports = _core_api_imports(root)

    def feature(module: str) -> str | None:
        head = module.split(".")[0]
        return head if head in features else None

    def uses_others(f: str) -> bool:
        return any(
            feature(src) == f
            and src.split(".")[-1] not in EDGES
            and (g := feature(dst)) not in (None, f)
            and g not in PLATFORM
            and dst.split(".")[-1] not in SHAPES
            for src, dst, _ in imports
        )

    leaves = {f for f in features if f != WORKFLOW and not uses_others(f)}
    used_by_workflow = {dst for src, dst, _ in imports if feature(src) == WORKFLOW and feature(dst) != WORKFLOW}
    wrong = []
    for src, dst, how in imports:
        f, g = feature(src), feature(dst)
        if f is None or g is None or f == g or f == WORKFLOW:
            continue
        if g == WORKFLOW:
            if src in used_by_workflow:
                wrong.append(f"{src} is used by the workflow and uses it back ({dst}, {how})")
            continue
        if g in PLATFORM or dst.split(".")[-1] in SHAPES or g in leaves:
            continue
        wrong.append(f"{src} uses {dst} ({how}): {g} is not a leaf; go through the workflow")
    return wrong


def test_core_api_features_compose_only_through_the_workflow() -> None:
    wrong = feature_violations()
    assert not wrong, f"{len(wrong)} feature imports bypass the workflow:\n" + "\n".join(wrong)


def test_core_api_has_no_function_local_imports_of_other_features() -> None:
    """A function-local import of another feature hides a cycle; there is none left to hide."""
    features = _core_api_features()
    hidden = [
        f"{src} → {dst}"
        for src, dst, how in _core_api_imports()
        if how == "local" and dst.split(".")[0] in features and dst.split(".")[0] != src.split(".")[0]
    ]
    assert not hidden, "function-local cross-feature imports: " + ", ".join(hidden)


def test_the_feature_contract_sees_a_bypass(tmp_path: Path) -> None:
    """The contract fails on what it forbids: a feature calling into a non-leaf feature's service."""
    for name, body in {
        "runs/__init__.py": "",
        "tasks/__init__.py": "",
        "workflow/__init__.py": "",
        "skills/__init__.py": "",
        "skills/service.py": "",
        "runs/lifecycle.py": "from nexus.core_api.skills import service\n",
        "tasks/service.py": "def f():\n    from nexus.core_api.runs.lifecycle import cancel\n",
        "workflow/engine.py": "from nexus.core_api.tasks.service import f\n",
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    wrong = feature_violations(tmp_path)
    assert wrong == ["tasks.service uses runs.lifecycle (local): runs is not a leaf; go through the workflow"]

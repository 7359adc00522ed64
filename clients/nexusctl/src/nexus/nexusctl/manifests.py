"""Manifests: YAML documents in files or folders, each `kind` + `metadata.name` + `spec`.

    apiVersion: nexus/v1        # optional
    kind: Agent                 # Agent | Skill | Repository | MemoryItem | Task
    metadata:
      name: hello
    spec:
      system_prompt: ...

A Skill may keep its markdown beside the manifest: `spec.content_file: house-style.md`."""

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from nexus.domain.json_types import JsonObject
from nexus.nexusctl.kinds import BY_MANIFEST, Kind

API_VERSION = "nexus/v1"
SUFFIXES = (".yaml", ".yml", ".json")
# Dependencies first: agents name skills; tasks name agents and repositories; memory names agents.
ORDER = ("Skill", "Repository", "Agent", "MemoryItem", "Task")
_TOP = {"apiVersion", "kind", "metadata", "spec"}
_META = {"name", "labels", "annotations"}


class ManifestError(Exception):
    def __init__(self, source: str, field: str | None, message: str) -> None:
        super().__init__(f"{source}: {field + ': ' if field else ''}{message}")
        self.source = source
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Manifest:
    kind: Kind
    name: str
    spec: JsonObject
    source: str  # "path/file.yaml" or "path/file.yaml#2" for the 3rd document

    @property
    def ref(self) -> str:
        return f"{self.kind.singular}/{self.name}"


def files_in(path: str) -> list[tuple[str, str]]:
    """(source name, text) for a file, stdin (`-`), or every manifest file under a folder."""
    if path == "-":
        return [("<stdin>", sys.stdin.read())]
    p = Path(path)
    try:
        if p.is_dir():
            # In a folder only YAML counts (other JSON files, e.g. package.json, are not manifests).
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix in (".yaml", ".yml") and not f.name.startswith(".")
            )
            return [(str(f), f.read_text()) for f in found]
        if not p.exists():
            raise ManifestError(path, None, "no such file or directory")
        return [(str(p), p.read_text())]
    except OSError as exc:  # a name too long, no permission, a folder that moved while read
        raise ManifestError(path[:200], None, exc.strerror or str(exc)) from None
    except UnicodeError:
        raise ManifestError(path[:200], None, "not UTF-8 text") from None


def parse(source: str, text: str) -> list[Manifest]:
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ManifestError(source, None, f"not valid YAML: {exc}") from None
    out = []
    real = [d for d in docs if d is not None]
    for i, doc in enumerate(real):
        where = source if len(real) == 1 else f"{source}#{i}"
        out.append(_one(where, doc, Path(source).parent))
    return out


def _one(where: str, doc: object, base: Path) -> Manifest:
    if not isinstance(doc, dict):
        raise ManifestError(where, None, f"a manifest is a mapping, got {type(doc).__name__}")
    if extra := sorted(set(map(str, doc)) - _TOP):
        raise ManifestError(where, extra[0], f"unknown field; a manifest has {', '.join(sorted(_TOP))}")
    if doc.get("apiVersion") not in (None, API_VERSION):
        raise ManifestError(where, "apiVersion", f"expected {API_VERSION!r}, got {doc.get('apiVersion')!r}")
    kind_name = doc.get("kind")
    if kind_name not in BY_MANIFEST:
        raise ManifestError(where, "kind", f"expected one of {', '.join(ORDER)}, got {kind_name!r}")
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        raise ManifestError(where, "metadata", "required: a mapping with `name`")
    if extra := sorted(set(map(str, meta)) - _META):
        raise ManifestError(where, f"metadata.{extra[0]}", "unknown field")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ManifestError(where, "metadata.name", "required: a non-empty string")
    spec = doc.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise ManifestError(where, "spec", f"must be a mapping, got {type(spec).__name__}")
    spec = dict(spec)
    if "name" in spec and spec["name"] != name:
        raise ManifestError(where, "spec.name", f"{spec['name']!r} differs from metadata.name {name!r}; leave it out")
    if kind_name == "Skill" and "content_file" in spec:
        if "content" in spec:
            raise ManifestError(where, "spec.content_file", "give content or content_file, not both")
        path = base / str(spec.pop("content_file"))
        try:
            spec["content"] = path.read_text()
        except OSError as exc:
            raise ManifestError(where, "spec.content_file", f"cannot read {path}: {exc.strerror}") from None
    return Manifest(BY_MANIFEST[kind_name], name, spec, where)


def load(paths: list[str]) -> list[Manifest]:
    """Every manifest under `paths`, dependencies first; raises on the first malformed one."""
    manifests: list[Manifest] = []
    for path in paths:
        for source, text in files_in(path):
            manifests.extend(parse(source, text))
    seen: dict[tuple[str, str], str] = {}
    for m in manifests:
        k = (m.kind.name, m.name)
        if k in seen:
            raise ManifestError(m.source, "metadata.name", f"{m.ref} is also defined in {seen[k]}")
        seen[k] = m.source
    return sorted(manifests, key=lambda m: ORDER.index(m.kind.manifest or ""))

"""`apply`: make the API hold what the manifests say, changing only what differs.

Agents, skills and repositories are found by name and replaced with PUT; the API keeps a PUT of
an identical spec a no-op (no new revision, no audit entry), so the revision/version tells us
whether anything changed. Memory items and tasks have no name in the API: a memory item is found
by its `source` (apply sets it to `manifest/<name>`), a task by its title (default: the name)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from nexus.domain.json_types import JsonObject
from nexus.nexusctl.client import ApiError, Client, seg
from nexus.nexusctl.manifests import Manifest, ManifestError

CREATED, CONFIGURED, UNCHANGED = "created", "configured", "unchanged"
TASK_SCAN_LIMIT = 5000


@dataclass(frozen=True)
class Outcome:
    manifest: Manifest
    action: str
    id: str
    detail: str = ""


def _find(client: Client, path: str) -> JsonObject | None:
    try:
        return cast(JsonObject, client.get(path))  # an object's path answers the object
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def _marker(obj: JsonObject) -> tuple[object, object, object]:
    return obj.get("revision"), obj.get("version"), obj.get("updated_at")


def check_skills(client: Client, m: Manifest) -> None:
    """The API accepts an agent naming a skill that does not exist (its runs would fail at
    dispatch); apply catches it here, where the manifest can still be fixed."""
    skills = m.spec.get("skills") or []
    for i, ref in enumerate(skills if isinstance(skills, list) else []):
        if not isinstance(ref, str):
            continue  # the API names the type error
        name, _, version = ref.partition("@")
        path = f"/v1/skills/{seg(name)}/versions/{seg(version)}" if version.isdigit() else f"/v1/skills/{seg(name)}"
        if _find(client, path) is None:
            raise ManifestError(m.source, f"spec.skills[{i}]", f"skill {ref!r} does not exist")


def apply_named(client: Client, m: Manifest) -> Outcome:
    if m.kind.manifest == "Agent":
        check_skills(client, m)
    body = {**m.spec, "name": m.name}
    existing = _find(client, f"{m.kind.path}/{seg(m.name)}")
    if existing is None:
        created = client.post(m.kind.path, body)
        return Outcome(m, CREATED, created["id"], _revision(created))
    updated = client.put(f"{m.kind.path}/{seg(existing['id'])}", body)
    action = CONFIGURED if _marker(updated) != _marker(existing) else UNCHANGED
    return Outcome(m, action, updated["id"], _revision(updated))


def _revision(obj: JsonObject) -> str:
    if "revision" in obj:
        return f"revision {obj['revision']}"
    if "version" in obj:
        return f"version {obj['version']}"
    return ""


def _ref_id(client: Client, path: str, ref: str | None) -> str | None:
    if not ref:
        return None
    found = _find(client, f"{path}/{seg(ref)}")
    return found["id"] if found else ref  # unknown: let the API name the field on create/patch


def apply_memory(client: Client, m: Manifest) -> Outcome:
    source = f"manifest/{m.name}"
    if "source" in m.spec:
        raise ManifestError(m.source, "spec.source", f"apply sets a memory item's source to {source!r}; leave it out")
    page = client.get(m.kind.path, source=source, include_expired="true", limit=2)
    items = page.get("items", [])
    if not items:
        created = client.post(m.kind.path, {**m.spec, "source": source})
        return Outcome(m, CREATED, created["id"])
    item = items[0]
    if m.spec.get("scope") != item.get("scope"):
        raise ManifestError(
            m.source, "spec.scope", f"is {item.get('scope')!r} in Nexus; delete memory/{item['id']} to change it"
        )
    want_scope_id = _ref_id(
        client, "/v1/agents" if item["scope"] == "agent" else "/v1/repositories", m.spec.get("scope_id")
    )
    if item.get("scope") != "global" and want_scope_id != item.get("scope_id"):
        raise ManifestError(
            m.source, "spec.scope_id", f"is {item.get('scope_id')!r} in Nexus; delete memory/{item['id']} to change it"
        )
    patch = {}
    if "content" in m.spec and m.spec["content"] != item.get("content"):
        patch["content"] = m.spec["content"]
    if sorted(set(m.spec.get("tags") or [])) != sorted(item.get("tags") or []):
        patch["tags"] = list(m.spec.get("tags") or [])
    if not patch:  # ttl_s counts from creation: re-applying does not extend it
        return Outcome(m, UNCHANGED, item["id"])
    client.patch(f"{m.kind.path}/{seg(item['id'])}", patch)
    return Outcome(m, CONFIGURED, item["id"])


_TASK_PATCHABLE = ("description", "priority", "blocked_by", "assignee", "repository")


def apply_task(client: Client, m: Manifest) -> Outcome:
    spec = {"title": m.name, **m.spec}
    title = spec["title"]
    existing = next((t for t in client.pages(m.kind.path, limit=TASK_SCAN_LIMIT) if t.get("title") == title), None)
    if existing is None:
        created = client.post(m.kind.path, spec)
        run = created.get("current_run_id")
        return Outcome(m, CREATED, created["id"], f"run {run}" if run else created.get("status", ""))
    current = {
        "description": existing.get("description", ""),
        "priority": existing.get("priority", 0),
        "blocked_by": existing.get("blocked_by", []),
        "assignee": existing.get("assignee_agent_id"),
        "repository": existing.get("repository_id"),
    }
    desired = {k: spec[k] for k in _TASK_PATCHABLE if k in spec}
    if "assignee" in desired:
        desired["assignee"] = _ref_id(client, "/v1/agents", desired["assignee"])
    if "repository" in desired:
        desired["repository"] = _ref_id(client, "/v1/repositories", desired["repository"])
    patch = {k: v for k, v in desired.items() if v != current[k] and v is not None}
    if not patch:
        return Outcome(m, UNCHANGED, existing["id"], existing.get("status", ""))
    updated = client.patch(f"{m.kind.path}/{seg(existing['id'])}", patch)
    return Outcome(m, CONFIGURED, updated["id"], updated.get("status", ""))


HANDLERS: dict[str, Callable[[Client, Manifest], Outcome]] = {
    "Agent": apply_named,
    "Skill": apply_named,
    "Repository": apply_named,
    "MemoryItem": apply_memory,
    "Task": apply_task,
}


def apply_one(client: Client, m: Manifest) -> Outcome:
    return HANDLERS[m.kind.manifest or ""](client, m)

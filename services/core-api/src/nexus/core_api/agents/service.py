"""Agents are versioned: every change is a new revision; a run pins the revision it was dispatched with."""

import msgspec
from pymongo.errors import DuplicateKeyError

from nexus.core_api.agents.schemas import AgentOut, AgentRevisionOut, AgentSpec
from nexus.core_api.errors import DomainError, changed_concurrently, not_found, one_writer
from nexus.core_api.schemas import iso
from nexus.core_api.skills.service import resolve
from nexus.db.cache import cached_get
from nexus.db.documents import Agent, AgentRevision, now
from nexus.db.writes import update_document
from nexus.domain.agents import TOOL_NAMES
from nexus.domain.ids import new_id
from nexus.domain.limits import within_bounds


def rev_id(agent_id: str, revision: int) -> str:
    return f"{agent_id}@{revision:06d}"  # zero-padded so ids sort like revisions


def to_out(doc: Agent) -> AgentOut:
    return AgentOut(
        id=doc.id,
        name=doc.name,
        revision=doc.revision,
        spec=within_bounds(doc.spec, AgentSpec),
        created_at=iso(doc.created_at),
        updated_at=iso(doc.updated_at),
    )


def revision_out(doc: AgentRevision) -> AgentRevisionOut:
    return AgentRevisionOut(
        agent_id=doc.agent_id,
        revision=doc.revision,
        spec=within_bounds(doc.spec, AgentSpec),
        created_at=iso(doc.created_at),
        created_by=doc.created_by,
    )


def _check_values(spec: AgentSpec) -> None:
    for i, tool in enumerate(spec.tools):
        if tool not in TOOL_NAMES:
            known = ", ".join(sorted(TOOL_NAMES))
            raise DomainError(422, f"there is no tool {tool!r} (tools: {known})", field=f"tools[{i}]")


async def _check_references(spec: AgentSpec) -> None:
    _check_values(spec)
    await resolve(spec.skills)  # an unknown skill is a 422 naming `skills` now, not a failed dispatch later
    for i, name in enumerate(spec.delegates_to):
        field = f"delegates_to[{i}]"
        if name in spec.delegates_to[:i]:
            raise DomainError(422, f"agent {name!r} is named twice", field=field)
        if name != spec.name and await Agent.find_one({"name": name, "deleted": False}) is None:
            raise DomainError(422, f"there is no agent named {name!r} to delegate to", field=field)


async def create(spec: AgentSpec, *, actor: str) -> Agent:
    await _check_references(spec)
    if await Agent.find_one({"name": spec.name}):
        raise DomainError(409, f"an agent named {spec.name!r} exists", field="name")
    doc = Agent(id=new_id("agt"), name=spec.name, revision=1, spec=msgspec.to_builtins(spec))
    try:
        await doc.insert()
    except DuplicateKeyError as exc:
        raise DomainError(409, f"an agent named {spec.name!r} exists", field="name") from exc
    await AgentRevision(id=rev_id(doc.id, 1), agent_id=doc.id, revision=1, spec=doc.spec, created_by=actor).insert()
    return doc


async def get(agent_id_or_name: str) -> Agent:
    doc = await cached_get(Agent, agent_id_or_name)
    if doc is None:
        doc = await Agent.find_one({"name": agent_id_or_name})
    if doc is None or doc.deleted:
        raise not_found("agent", agent_id_or_name)
    return doc


async def update(agent_id: str, spec: AgentSpec, *, actor: str) -> tuple[Agent, bool]:
    """A new revision when the spec changed; the same one when it did not (so `apply` is idempotent)."""
    doc = await get(agent_id)
    await _check_references(spec)
    new_spec = msgspec.to_builtins(spec)
    if spec.name != doc.name:
        raise DomainError(422, "an agent's name cannot change", field="name")
    if new_spec == doc.spec:
        return doc, False
    revision = doc.revision + 1
    with one_writer("agent", "revision"):
        await AgentRevision(
            id=rev_id(doc.id, revision), agent_id=doc.id, revision=revision, spec=new_spec, created_by=actor
        ).insert()
    res = await update_document(
        Agent,
        doc.id,
        {"$set": {"spec": new_spec, "revision": revision, "updated_at": now()}},
        {"revision": doc.revision},
    )
    if res.modified_count != 1:
        raise changed_concurrently("agent", "revision")
    return await get(doc.id), True


async def revision(agent_id: str, number: int) -> AgentRevision:
    doc = await AgentRevision.get(rev_id(agent_id, number))
    if doc is None:
        raise not_found("agent revision", f"{agent_id}@{number}")
    return doc


async def delete(agent_id: str) -> Agent:
    doc = await get(agent_id)
    await update_document(Agent, doc.id, {"$set": {"deleted": True, "name": f"{doc.name}~deleted~{doc.id}"}})
    return doc

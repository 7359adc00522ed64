"""Named resources (agents, skills, repositories, schedules) are referred to by id or by name:
the one place that lookup is written. Callers say what a miss means where they stand: a resource
the request is about is 404, one it refers to is the caller's mistake, 422 naming the field."""

from typing import Any, TypeVar

from nexus.core_api.errors import DomainError, not_found
from nexus.db.cache import cached_find, cached_get
from nexus.db.documents import Agent, Repository

D = TypeVar("D")  # a document class of nexus.db.documents with `id`, `name` and `deleted`


async def find_named(doc_cls: type[D], ref: str, *, live: bool = True, cached: bool = False) -> D | None:
    """The document whose id or name is `ref`; a soft-deleted one only with `live=False`. With
    `cached`, read through the read cache (a shared copy: read it, never change it)."""
    documents: Any = doc_cls
    if cached:
        # A name is no id: its miss by id is remembered, as the find by name is, until a write to the
        # collection (a task naming its agent by name then reads nothing).
        doc: D | None = await cached_get(documents, ref, keep_missing=True)
        if doc is None:
            doc = next(iter(await cached_find(documents, {"name": ref}, [("_id", 1)], 1)), None)
    else:
        doc = await documents.get(ref) or await documents.find_one({"name": ref})
    if doc is None or (live and getattr(doc, "deleted", False)):
        return None
    return doc


async def get_named(doc_cls: type[D], ref: str, kind: str) -> D:
    """The resource a request is about: 404 when there is none."""
    doc = await find_named(doc_cls, ref)
    if doc is None:
        raise not_found(kind, ref)
    return doc


async def named_id(
    doc_cls: type[D], ref: str, *, kind: str, field: str, live: bool = True, cached: bool = False
) -> str:
    """The id of a resource a request refers to: 422 naming `field` when there is none."""
    doc: Any = await find_named(doc_cls, ref, live=live, cached=cached)
    if doc is None:
        raise DomainError(422, f"{kind} {ref!r} does not exist", field=field)
    return str(doc.id)


async def goal_refs(meta_agent: str | None, repository: str | None) -> tuple[str | None, str | None]:
    """A goal's planner and repository: names or ids in, ids out; a reference to nothing is the
    caller's mistake, named by field."""
    agent_id = repo_id = None
    if meta_agent:
        agent_id = await named_id(Agent, meta_agent, kind="agent", field="meta_agent")
    if repository:
        repo_id = await named_id(Repository, repository, kind="repository", field="repository")
    return agent_id, repo_id

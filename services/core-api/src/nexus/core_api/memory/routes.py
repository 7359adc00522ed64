from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import MANAGE_AGENTS, READ
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.named import get_named, named_id
from nexus.core_api.memory import service
from nexus.core_api.memory.schemas import MemoryCreate, MemoryOut, MemoryPreviewOut, MemoryUpdate, Scope
from nexus.core_api.memory.select import select_items
from nexus.core_api.pagination import Cursor, Filter, Limit, Page, page_of
from nexus.db.documents import Agent, MemoryItem, Repository, now
from nexus.domain.agents import MemoryPolicy
from nexus.domain.json_types import JsonObject
from nexus.domain.limits import within_bounds


class MemoryController(Controller):
    path = "/v1/memory"
    tags = ["memory"]

    @post("/", guards=[MANAGE_AGENTS])
    async def create_memory(self, request: ApiRequest, data: JSONBody[MemoryCreate]) -> MemoryOut:
        doc = await service.create(data)
        await record(request.user, "memory.create", f"memory/{doc.id}", after_id=doc.id)
        return service.to_out(doc)

    @get("/", guards=[READ])
    async def list_memory(
        self,
        limit: Limit = 50,
        cursor: Cursor = None,
        # `scope` and `query` are litestar's reserved names: the parameters are renamed, not their query keys.
        scope_: Annotated[Scope | None, QueryParameter(name="scope", description="agent, repo or global")] = None,
        scope_id: Filter = None,
        tag: Annotated[str | None, Parameter(description="items carrying this tag", max_length=63)] = None,
        source: Filter = None,
        include_expired: FromQuery[bool] = False,
    ) -> Page[MemoryOut]:
        filters: JsonObject = {
            k: v for k, v in {"scope": scope_, "scope_id": scope_id, "tags": tag, "source": source}.items() if v
        }
        if not include_expired:
            filters["$or"] = [{"expires_at": None}, {"expires_at": {"$gt": now()}}]
        docs, nxt = await page_of(
            MemoryItem, filters, limit, cursor, cache=include_expired
        )  # else the query names now()
        return Page([service.to_out(d) for d in docs], nxt)

    @get("/{item_id:str}", guards=[READ])
    async def get_memory(self, item_id: FromPath[str]) -> MemoryOut:
        return service.to_out(await service.get(item_id))

    @patch("/{item_id:str}", guards=[MANAGE_AGENTS])
    async def update_memory(
        self, request: ApiRequest, item_id: FromPath[str], data: JSONBody[MemoryUpdate]
    ) -> MemoryOut:
        doc, changed = await service.update(item_id, data)
        if changed:
            await record(request.user, "memory.update", f"memory/{doc.id}", before_id=doc.id, after_id=doc.id)
        return service.to_out(doc)

    @delete("/{item_id:str}", guards=[MANAGE_AGENTS], status_code=HTTP_204_NO_CONTENT)
    async def delete_memory(self, request: ApiRequest, item_id: FromPath[str]) -> None:
        doc = await service.delete(item_id)
        await record(request.user, "memory.delete", f"memory/{doc.id}", before_id=doc.id)


@get("/v1/agents/{agent_id:str}/memory/preview", guards=[READ], tags=["memory"])
async def preview_memory(
    agent_id: FromPath[str],
    query_: Annotated[
        str, QueryParameter(name="query", description="the task text a run would carry", max_length=20_000)
    ] = "",
    repository: Annotated[
        str | None, Parameter(description="repository id or name the task is for", max_length=120)
    ] = None,
) -> MemoryPreviewOut:
    """The memory a run of this agent would be given, selected exactly as dispatch selects it."""
    agent = await get_named(Agent, agent_id, kind="agent")
    repo_id = await named_id(Repository, repository, kind="repository", field="repository") if repository else None
    policy = within_bounds(agent.spec.get("memory_policy", {}), MemoryPolicy)
    items = await select_items(policy, agent_id=agent.id, repository_id=repo_id, query=query_)
    return MemoryPreviewOut(
        agent_id=agent.id,
        agent_revision=agent.revision,
        repository_id=repo_id,
        query=query_,
        items=[service.to_out(m) for m in items],
        total_chars=sum(len(m.content) for m in items),
    )

from litestar import Controller, delete, get, post, put
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from nexus.core_api.agents import service
from nexus.core_api.agents.schemas import AgentOut, AgentRevisionOut, AgentSpec
from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import MANAGE_AGENTS, READ
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.pagination import Cursor, Limit, Page, page_of
from nexus.db.documents import Agent, AgentRevision


class AgentController(Controller):
    path = "/v1/agents"
    tags = ["agents"]

    @post("/", guards=[MANAGE_AGENTS])
    async def create_agent(self, request: ApiRequest, data: JSONBody[AgentSpec]) -> AgentOut:
        doc = await service.create(data, actor=request.user.key_id)
        await record(request.user, "agent.create", f"agents/{doc.id}", after_id=service.rev_id(doc.id, 1))
        return service.to_out(doc)

    @get("/", guards=[READ])
    async def list_agents(self, limit: Limit = 50, cursor: Cursor = None) -> Page[AgentOut]:
        docs, nxt = await page_of(Agent, {"deleted": False}, limit, cursor)
        return Page([service.to_out(d) for d in docs], nxt)

    @get("/{agent_id:str}", guards=[READ])
    async def get_agent(self, agent_id: FromPath[str]) -> AgentOut:
        return service.to_out(await service.get(agent_id))

    @put("/{agent_id:str}", guards=[MANAGE_AGENTS])
    async def update_agent(self, request: ApiRequest, agent_id: FromPath[str], data: JSONBody[AgentSpec]) -> AgentOut:
        before = await service.get(agent_id)
        doc, changed = await service.update(agent_id, data, actor=request.user.key_id)
        if changed:
            await record(
                request.user,
                "agent.update",
                f"agents/{doc.id}",
                before_id=service.rev_id(doc.id, before.revision),
                after_id=service.rev_id(doc.id, doc.revision),
            )
        return service.to_out(doc)

    @delete("/{agent_id:str}", guards=[MANAGE_AGENTS], status_code=HTTP_204_NO_CONTENT)
    async def delete_agent(self, request: ApiRequest, agent_id: FromPath[str]) -> None:
        doc = await service.delete(agent_id)
        await record(request.user, "agent.delete", f"agents/{doc.id}", before_id=service.rev_id(doc.id, doc.revision))

    @get("/{agent_id:str}/revisions", guards=[READ])
    async def list_revisions(
        self, agent_id: FromPath[str], limit: Limit = 50, cursor: Cursor = None
    ) -> Page[AgentRevisionOut]:
        agent = await service.get(agent_id)
        docs, nxt = await page_of(AgentRevision, {"agent_id": agent.id}, limit, cursor)
        return Page([service.revision_out(d) for d in docs], nxt)

    @get("/{agent_id:str}/revisions/{number:int}", guards=[READ])
    async def get_revision(self, agent_id: FromPath[str], number: FromPath[int]) -> AgentRevisionOut:
        agent = await service.get(agent_id)
        return service.revision_out(await service.revision(agent.id, number))

from litestar import Controller, delete, get, post, put
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import MANAGE_AGENTS, READ
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.pagination import Cursor, Limit, Page, page_of
from nexus.core_api.skills import service
from nexus.core_api.skills.schemas import SkillOut, SkillSpec
from nexus.db.documents import Skill, SkillRevision


class SkillController(Controller):
    path = "/v1/skills"
    tags = ["skills"]

    @post("/", guards=[MANAGE_AGENTS])
    async def create_skill(self, request: ApiRequest, data: JSONBody[SkillSpec]) -> SkillOut:
        doc = await service.create(data)
        await record(request.user, "skill.create", f"skills/{doc.id}", after_id=f"{doc.id}@1")
        return service.to_out(doc)

    @get("/", guards=[READ])
    async def list_skills(self, limit: Limit = 50, cursor: Cursor = None) -> Page[SkillOut]:
        docs, nxt = await page_of(Skill, {"deleted": False}, limit, cursor)
        return Page([service.to_out(d) for d in docs], nxt)

    @get("/{skill_id:str}", guards=[READ])
    async def get_skill(self, skill_id: FromPath[str]) -> SkillOut:
        return service.to_out(await service.get(skill_id))

    @put("/{skill_id:str}", guards=[MANAGE_AGENTS])
    async def update_skill(self, request: ApiRequest, skill_id: FromPath[str], data: JSONBody[SkillSpec]) -> SkillOut:
        before = await service.get(skill_id)
        doc, changed = await service.update(skill_id, data)
        if changed:
            await record(
                request.user,
                "skill.update",
                f"skills/{doc.id}",
                before_id=f"{doc.id}@{before.version}",
                after_id=f"{doc.id}@{doc.version}",
            )
        return service.to_out(doc)

    @delete("/{skill_id:str}", guards=[MANAGE_AGENTS], status_code=HTTP_204_NO_CONTENT)
    async def delete_skill(self, request: ApiRequest, skill_id: FromPath[str]) -> None:
        doc = await service.delete(skill_id)
        await record(request.user, "skill.delete", f"skills/{doc.id}", before_id=f"{doc.id}@{doc.version}")

    @get("/{skill_id:str}/versions", guards=[READ])
    async def list_versions(self, skill_id: FromPath[str], limit: Limit = 50, cursor: Cursor = None) -> Page[SkillOut]:
        skill = await service.get(skill_id)
        docs, nxt = await page_of(SkillRevision, {"skill_id": skill.id}, limit, cursor)
        return Page([service.to_out(d) for d in docs], nxt)

    @get("/{skill_id:str}/versions/{number:int}", guards=[READ])
    async def get_version(self, skill_id: FromPath[str], number: FromPath[int]) -> SkillOut:
        return service.to_out(await service.version(skill_id, number))

from litestar import Controller, delete, get, post, put
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import MANAGE_AGENTS, READ
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.pagination import Cursor, Limit, Page, page_of
from nexus.core_api.schedules import service
from nexus.core_api.schedules.schemas import ScheduleOut, ScheduleSpec
from nexus.db.documents import Schedule


class ScheduleController(Controller):
    path = "/v1/schedules"
    tags = ["schedules"]

    @post("/", guards=[MANAGE_AGENTS])
    async def create_schedule(self, request: ApiRequest, data: JSONBody[ScheduleSpec]) -> ScheduleOut:
        doc = await service.create(data, actor=request.user.key_id)
        await record(request.user, "schedule.create", f"schedules/{doc.id}", after_id=doc.id)
        return service.to_out(doc)

    @get("/", guards=[READ])
    async def list_schedules(self, limit: Limit = 50, cursor: Cursor = None) -> Page[ScheduleOut]:
        docs, nxt = await page_of(Schedule, {"deleted": False}, limit, cursor)
        return Page([service.to_out(d) for d in docs], nxt)

    @get("/{schedule_id:str}", guards=[READ])
    async def get_schedule(self, schedule_id: FromPath[str]) -> ScheduleOut:
        return service.to_out(await service.get(schedule_id))

    @put("/{schedule_id:str}", guards=[MANAGE_AGENTS])
    async def update_schedule(
        self, request: ApiRequest, schedule_id: FromPath[str], data: JSONBody[ScheduleSpec]
    ) -> ScheduleOut:
        doc, changed = await service.update(schedule_id, data)
        if changed:
            await record(request.user, "schedule.update", f"schedules/{doc.id}", before_id=doc.id, after_id=doc.id)
        return service.to_out(doc)

    @delete("/{schedule_id:str}", guards=[MANAGE_AGENTS], status_code=HTTP_204_NO_CONTENT)
    async def delete_schedule(self, request: ApiRequest, schedule_id: FromPath[str]) -> None:
        doc = await service.delete(schedule_id)
        await record(request.user, "schedule.delete", f"schedules/{doc.id}", before_id=doc.id)

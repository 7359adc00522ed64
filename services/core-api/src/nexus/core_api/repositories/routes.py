from litestar import Controller, delete, get, post, put
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import MANAGE_AGENTS, READ
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.pagination import Cursor, Limit, Page, page_of
from nexus.core_api.repositories import service
from nexus.core_api.repositories.schemas import RepositoryOut, RepositorySpec
from nexus.db.documents import Repository


class RepositoryController(Controller):
    path = "/v1/repositories"
    tags = ["repositories"]

    @post("/", guards=[MANAGE_AGENTS])
    async def create_repository(self, request: ApiRequest, data: JSONBody[RepositorySpec]) -> RepositoryOut:
        doc = await service.create(data)
        await record(request.user, "repository.create", f"repositories/{doc.id}", after_id=doc.id)
        return service.to_out(doc)

    @get("/", guards=[READ])
    async def list_repositories(self, limit: Limit = 50, cursor: Cursor = None) -> Page[RepositoryOut]:
        docs, nxt = await page_of(Repository, {"deleted": False}, limit, cursor)
        return Page([service.to_out(d) for d in docs], nxt)

    @get("/{repository_id:str}", guards=[READ])
    async def get_repository(self, repository_id: FromPath[str]) -> RepositoryOut:
        return service.to_out(await service.get(repository_id))

    @put("/{repository_id:str}", guards=[MANAGE_AGENTS])
    async def update_repository(
        self, request: ApiRequest, repository_id: FromPath[str], data: JSONBody[RepositorySpec]
    ) -> RepositoryOut:
        doc, changed = await service.update(repository_id, data)
        if changed:
            await record(request.user, "repository.update", f"repositories/{doc.id}", before_id=doc.id, after_id=doc.id)
        return service.to_out(doc)

    @delete("/{repository_id:str}", guards=[MANAGE_AGENTS], status_code=HTTP_204_NO_CONTENT)
    async def delete_repository(self, request: ApiRequest, repository_id: FromPath[str]) -> None:
        doc = await service.delete(repository_id)
        await record(request.user, "repository.delete", f"repositories/{doc.id}", before_id=doc.id)

from typing import Annotated, Literal

from litestar import Controller, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import MANAGE_KEYS
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.keys import service
from nexus.core_api.keys.schemas import KeyCreate, KeyCreated, KeyOut, created_out, to_out
from nexus.core_api.pagination import Cursor, Limit, Page, page_of
from nexus.db.documents import ApiKey


class ApiKeyController(Controller):
    path = "/v1/api-keys"
    tags = ["api-keys"]

    @post("/", guards=[MANAGE_KEYS])
    async def create_api_key(self, request: ApiRequest, data: JSONBody[KeyCreate]) -> KeyCreated:
        doc, raw = await service.create(data.name, data.role, created_by=request.user.key_id)
        await record(request.user, "api_key.create", f"api-keys/{doc.id}", after_id=doc.id)
        return created_out(doc, raw)

    @get("/", guards=[MANAGE_KEYS])
    async def list_api_keys(
        self,
        limit: Limit = 50,
        cursor: Cursor = None,
        role: Annotated[
            Literal["admin", "lead", "viewer", "runner"] | None, Parameter(description="filter by role")
        ] = None,
        revoked: FromQuery[bool | None] = None,
        run_id: Annotated[str | None, Parameter(max_length=200)] = None,
    ) -> Page[KeyOut]:
        filters = {k: v for k, v in {"role": role, "revoked": revoked, "run_id": run_id}.items() if v is not None}
        docs, nxt = await page_of(ApiKey, filters, limit, cursor)
        return Page([to_out(d) for d in docs], nxt)

    @get("/{key_id:str}", guards=[MANAGE_KEYS])
    async def get_api_key(self, key_id: FromPath[str]) -> KeyOut:
        return to_out(await service.get(key_id))

    @delete("/{key_id:str}", guards=[MANAGE_KEYS], status_code=HTTP_204_NO_CONTENT)
    async def revoke_api_key(self, request: ApiRequest, key_id: FromPath[str]) -> None:
        doc = await service.revoke(key_id, request.app.state.key_cache)
        await record(request.user, "api_key.revoke", f"api-keys/{doc.id}", before_id=doc.id)


@post("/v1/runs/{run_id:str}/token", guards=[MANAGE_KEYS], tags=["api-keys"])
async def mint_run_token(request: ApiRequest, run_id: FromPath[str]) -> KeyCreated:
    """A `runner` key valid for this run only (its events, its approvals); shown once."""
    doc, raw = await service.mint_runner_token(run_id, created_by=request.user.key_id)
    await record(request.user, "api_key.create", f"api-keys/{doc.id}", after_id=doc.id)
    return created_out(doc, raw)

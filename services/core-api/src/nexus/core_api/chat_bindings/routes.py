from typing import Annotated, Literal

from litestar import Controller, Response, delete, get, post
from litestar.params import FromPath, JSONBody, Parameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import MANAGE_KEYS
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.chat_bindings import service
from nexus.core_api.chat_bindings.schemas import ChatBindingCreate, ChatBindingOut, to_out
from nexus.core_api.pagination import Cursor, Limit, Page, page_of
from nexus.db.documents import ChatBinding


class ChatBindingController(Controller):
    path = "/v1/chat-bindings"
    tags = ["chat-bindings"]

    @post("/", guards=[MANAGE_KEYS])
    async def bind_chat_user(self, request: ApiRequest, data: JSONBody[ChatBindingCreate]) -> Response[ChatBindingOut]:
        """Bind a chat user to a Nexus identity with a role (lead: decide and create; viewer: read); binding
        the same user again replaces the identity and role."""
        doc, created = await service.bind(
            data.provider, data.user_id, data.identity, data.role, created_by=request.user.key_id
        )
        await record(request.user, "chat_binding.bind", f"chat-bindings/{doc.id}", after_id=doc.id)
        return Response(to_out(doc), status_code=201 if created else 200)

    @get("/", guards=[MANAGE_KEYS])
    async def list_chat_bindings(
        self,
        limit: Limit = 50,
        cursor: Cursor = None,
        role: Annotated[Literal["lead", "viewer"] | None, Parameter(description="filter by role")] = None,
    ) -> Page[ChatBindingOut]:
        docs, nxt = await page_of(ChatBinding, {"role": role} if role else {}, limit, cursor)
        return Page([to_out(d) for d in docs], nxt)

    @get("/{binding_id:str}", guards=[MANAGE_KEYS])
    async def get_chat_binding(self, binding_id: FromPath[str]) -> ChatBindingOut:
        return to_out(await service.get(binding_id))

    @delete("/{binding_id:str}", guards=[MANAGE_KEYS], status_code=HTTP_204_NO_CONTENT)
    async def unbind_chat_user(self, request: ApiRequest, binding_id: FromPath[str]) -> None:
        doc = await service.unbind(binding_id)
        await record(request.user, "chat_binding.unbind", f"chat-bindings/{doc.id}", before_id=doc.id)

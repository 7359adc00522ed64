import re
from typing import Annotated

from litestar import Controller, get
from litestar.params import Parameter

from nexus.core_api.audit.schemas import AuditEntryOut, to_out
from nexus.core_api.auth.guards import MANAGE_KEYS
from nexus.core_api.pagination import Cursor, Limit, Page, page_of
from nexus.db.documents import AuditEntry
from nexus.domain.json_types import JsonObject

Pattern = Annotated[
    str | None, Parameter(max_length=200, description="exact, or a prefix ending in `*` (e.g. `task.*`)")
]


def _match(value: str) -> str | JsonObject:
    return {"$regex": "^" + re.escape(value[:-1])} if value.endswith("*") else value


class AuditController(Controller):
    path = "/v1/audit"
    tags = ["audit"]

    @get("/", guards=[MANAGE_KEYS])
    async def list_audit(
        self,
        limit: Limit = 50,
        cursor: Cursor = None,
        actor: Annotated[str | None, Parameter(max_length=200, description="api key id")] = None,
        action: Pattern = None,
        resource: Pattern = None,
    ) -> Page[AuditEntryOut]:
        """Newest first: who did what, when, with the ids before and after."""
        filters = {k: _match(v) for k, v in {"action": action, "resource": resource}.items() if v}
        if actor:
            filters["actor"] = actor
        docs, nxt = await page_of(AuditEntry, filters, limit, cursor)
        return Page([to_out(d) for d in docs], nxt)

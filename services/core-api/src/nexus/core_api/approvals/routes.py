from typing import Annotated, Literal

from litestar import Controller, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, Parameter

from nexus.core_api.approvals import service
from nexus.core_api.approvals.schemas import ApprovalDecision, ApprovalOut, to_out
from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import DECIDE_APPROVALS, READ
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError, not_found
from nexus.core_api.pagination import Cursor, Filter, Limit, Page, page_of
from nexus.db.documents import Approval

StatusFilter = Literal["pending", "approved", "rejected", "expired", "all"]


async def _get(approval_id: str) -> Approval:
    doc = await Approval.get(approval_id)
    if doc is None:
        raise not_found("approval", approval_id)
    return doc


# The decision is stored, and the run hears it once the bus is back: nothing to ask again.
DEFERRED = {202: ResponseSpec(ApprovalOut, description="Decided; the run hears it once the bus is back")}


async def _decide(
    request: ApiRequest, approval_id: str, decision: service.Decision, reason: str
) -> Response[ApprovalOut]:
    ctx: Context = request.app.state.ctx
    decided, told = await service.decide(ctx, approval_id, decision, reason, request.user.name)
    await record(
        request.user,
        f"approval.{decided.status}",
        f"approvals/{approval_id}",
        before_id=approval_id,
        after_id=approval_id,
    )
    if decided.status != decision:  # the clock got there first
        raise DomainError(409, f"approval is {decided.status}: {decided.reason}", field="decision")
    return Response(to_out(decided), status_code=200 if told else 202)


class ApprovalController(Controller):
    path = "/v1/approvals"
    tags = ["approvals"]

    @get("/", guards=[READ])
    async def list_approvals(
        self,
        limit: Limit = 50,
        cursor: Cursor = None,
        status: Annotated[StatusFilter, Parameter(description="`all` lists every status")] = "pending",
        run_id: Filter = None,
        action: Filter = None,
    ) -> Page[ApprovalOut]:
        filters = {k: v for k, v in {"run_id": run_id, "action": action}.items() if v}
        if status != "all":
            filters["status"] = status
        docs, nxt = await page_of(Approval, filters, limit, cursor)
        return Page([to_out(d) for d in docs], nxt)

    @get("/{approval_id:str}", guards=[READ])
    async def get_approval(self, approval_id: FromPath[str]) -> ApprovalOut:
        return to_out(await _get(approval_id))

    @post("/{approval_id:str}/approve", guards=[DECIDE_APPROVALS], status_code=200, responses=DEFERRED)
    async def approve(
        self, request: ApiRequest, approval_id: FromPath[str], data: JSONBody[ApprovalDecision | None] = None
    ) -> Response[ApprovalOut]:
        return await _decide(request, approval_id, "approved", data.reason if data else "")

    @post("/{approval_id:str}/reject", guards=[DECIDE_APPROVALS], status_code=200, responses=DEFERRED)
    async def reject(
        self, request: ApiRequest, approval_id: FromPath[str], data: JSONBody[ApprovalDecision]
    ) -> Response[ApprovalOut]:
        if not data.reason.strip():
            raise DomainError(422, "a rejection needs a reason", field="reason")
        return await _decide(request, approval_id, "rejected", data.reason)

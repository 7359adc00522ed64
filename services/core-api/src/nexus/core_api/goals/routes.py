"""goals."""

from typing import Annotated

from litestar import Controller, get, post, put
from litestar.params import FromPath, JSONBody, Parameter
from litestar.response import ServerSentEvent

from nexus.core_api.held import held_stream
from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import MANAGE_WORK, READ
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.budgets.schemas import BudgetIn
from nexus.core_api.context import Context
from nexus.core_api.idempotency import IdemKey
from nexus.core_api.goals import service
from nexus.core_api.goals.detail import detail
from nexus.core_api.goals.budget import set_budget
from nexus.core_api.goals.schemas import GoalCreate, GoalDetail, GoalOut
from nexus.core_api.goals.stream import goal_events
from nexus.core_api.named import goal_refs
from nexus.core_api.pagination import Cursor, Limit, Page, page_of
from nexus.core_api.runs.stream import parse_last_event_id
from nexus.core_api.tasks.schemas import TaskOut
from nexus.core_api.tasks.service import to_out as task_out
from nexus.core_api.workflow import engine
from nexus.db.documents import Goal, Task
from nexus.domain.budgets import Cap
from nexus.domain.tasks import TaskStatus


class GoalController(Controller):
    path = "/v1/goals"
    tags = ["goals"]

    @post("/", guards=[MANAGE_WORK])
    async def create_goal(
        self, request: ApiRequest, data: JSONBody[GoalCreate], idempotency_key: IdemKey = None
    ) -> GoalDetail:
        """Create a goal (its meta agent, if named, starts planning it); with an `Idempotency-Key`, once
        however often it is asked (the same body: the same goal)."""
        ctx: Context = request.app.state.ctx
        meta_agent_id, repo_id = await goal_refs(data.meta_agent, data.repository)
        budget = Cap(usd=data.budget.usd, tokens=data.budget.tokens) if data.budget else None
        goal = await engine.create_goal_once(
            ctx,
            idempotency_key,
            data,
            title=data.title,
            description=data.description,
            created_by=request.user.key_id,
            meta_agent_id=meta_agent_id,
            repository_id=repo_id,
            budget=budget,
        )
        await record(request.user, "goal.create", f"goals/{goal.id}", after_id=goal.id)
        return await detail(await service.get(goal.id))

    @get("/", guards=[READ])
    async def list_goals(
        self,
        limit: Limit = 50,
        cursor: Cursor = None,
        status: Annotated[str | None, Parameter(description="filter by status", max_length=40)] = None,
        created_by: Annotated[
            str | None, Parameter(description="filter by creator (key id or requester)", max_length=200)
        ] = None,
    ) -> Page[GoalOut]:
        filters = {k: v for k, v in {"status": status, "created_by": created_by}.items() if v}
        docs, nxt = await page_of(Goal, filters, limit, cursor)
        return Page([service.to_out(d) for d in docs], nxt)

    @get("/{goal_id:str}", guards=[READ])
    async def get_goal(self, goal_id: FromPath[str]) -> GoalDetail:
        return await detail(await service.get(goal_id))

    @post("/{goal_id:str}/cancel", guards=[MANAGE_WORK], status_code=200)
    async def cancel_goal(self, request: ApiRequest, goal_id: FromPath[str]) -> GoalDetail:
        """Cancel the goal and every run still going; 409 naming the rule when it already ended."""
        ctx: Context = request.app.state.ctx
        by = request.user.name or request.user.key_id
        goal = await engine.cancel_goal(ctx, (await service.get(goal_id)).id, by=by)
        await record(request.user, "goal.cancel", f"goals/{goal.id}", before_id=goal.id)
        return await detail(goal)

    @put("/{goal_id:str}/budget", guards=[MANAGE_WORK])
    async def put_goal_budget(
        self, request: ApiRequest, goal_id: FromPath[str], data: JSONBody[BudgetIn]
    ) -> GoalDetail:
        """Set or raise the goal's budget (audited); work it held back ("blocked: budget") is dispatched."""
        ctx: Context = request.app.state.ctx
        goal = await set_budget((await service.get(goal_id)).id, Cap(usd=data.usd, tokens=data.tokens))
        await engine.release(ctx, {"goal_id": goal.id})
        await record(request.user, "budget.update", f"goals/{goal.id}/budget", after_id=goal.id)
        return await detail(goal)

    @get("/{goal_id:str}/events", guards=[READ])
    async def goal_feed(self, request: ApiRequest, goal_id: FromPath[str]) -> ServerSentEvent:
        """The goal's progress as server-sent events: its goal.*, task.* and budget.* events, replayed
        after `Last-Event-ID` (or from the start) and followed; the feed ends after the goal's report."""
        goal = await service.get(goal_id)
        ctx: Context = request.app.state.ctx
        after = parse_last_event_id(request.headers.get("last-event-id"))
        return held_stream(request.app.state, request.user, request.auth, goal_events(ctx, goal.id, after_seq=after))

    @get("/{goal_id:str}/tasks", guards=[READ])
    async def list_goal_tasks(
        self,
        goal_id: FromPath[str],
        limit: Limit = 50,
        cursor: Cursor = None,
        status: Annotated[TaskStatus | None, Parameter(description="filter by status")] = None,
    ) -> Page[TaskOut]:
        goal = await service.get(goal_id)
        filters = {"goal_id": goal.id, **({"status": status.value} if status else {})}
        docs, nxt = await page_of(Task, filters, limit, cursor)
        return Page([task_out(d) for d in docs], nxt)

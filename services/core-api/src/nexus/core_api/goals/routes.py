from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.params import Parameter

from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import MANAGE_WORK, READ
from nexus.core_api.context import Context
from nexus.core_api.goals import service
from nexus.core_api.goals.schemas import GoalCreate, GoalOut
from nexus.core_api.pagination import Cursor, Limit, Page, page_of
from nexus.core_api.tasks.schemas import TaskOut
from nexus.core_api.tasks.service import to_out as task_out
from nexus.db.documents import Goal, Task
from nexus.domain.tasks import TaskStatus


class GoalController(Controller):
    path = "/v1/goals"
    tags = ["goals"]

    @post("/", guards=[MANAGE_WORK])
    async def create_goal(self, request: Request, data: GoalCreate) -> GoalOut:
        ctx: Context = request.app.state.ctx
        meta_agent_id, repo_id = await service.resolve_refs(data.meta_agent, data.repository)
        goal = await service.create_goal(ctx, data.title, data.description, created_by=request.user.key_id,
                                         meta_agent_id=meta_agent_id, repository_id=repo_id)
        await record(request.user, "goal.create", f"goals/{goal.id}", after_id=goal.id)
        return service.to_out(await service.get(goal.id))

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
    async def get_goal(self, goal_id: str) -> GoalOut:
        return service.to_out(await service.get(goal_id))

    @get("/{goal_id:str}/tasks", guards=[READ])
    async def list_goal_tasks(
        self,
        goal_id: str,
        limit: Limit = 50,
        cursor: Cursor = None,
        status: Annotated[TaskStatus | None, Parameter(description="filter by status")] = None,
    ) -> Page[TaskOut]:
        goal = await service.get(goal_id)
        filters = {"goal_id": goal.id, **({"status": status.value} if status else {})}
        docs, nxt = await page_of(Task, filters, limit, cursor)
        return Page([task_out(d) for d in docs], nxt)

from typing import Annotated

from litestar import Controller, get, patch, post
from litestar.params import FromPath, JSONBody, Parameter

from nexus.core_api.held import waiting
from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import MANAGE_WORK, READ
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.context import Context
from nexus.core_api.idempotency import IdemKey
from nexus.core_api.pagination import Cursor, Filter, Limit, Page, page_of
from nexus.core_api.tasks import service
from nexus.core_api.tasks.schemas import TaskCreate, TaskMove, TaskOut, TaskUpdate
from nexus.core_api.workflow.waiting import WaitS, task_when_its_run_ended
from nexus.core_api.workflow import engine
from nexus.db.documents import Task
from nexus.db.writes import written
from nexus.domain.tasks import TaskStatus


class TaskController(Controller):
    path = "/v1/tasks"
    tags = ["tasks"]

    @post("/", guards=[MANAGE_WORK])
    async def create_task(
        self, request: ApiRequest, data: JSONBody[TaskCreate], wait_s: WaitS = 0, idempotency_key: IdemKey = None
    ) -> TaskOut:
        """Create a task; with `wait_s`, answered once the run it started has ended (the task as it is then);
        with an `Idempotency-Key`, once however often it is asked (the same body: the same task)."""
        ctx: Context = request.app.state.ctx

        async def audit(task: Task) -> None:
            await record(request.user, "task.create", f"tasks/{task.id}", after_id=task.id)

        async with waiting(request, wait_s):  # refused before anything is made
            task = await engine.submit_task_once(ctx, data, idempotency_key, actor=request.user.key_id, audit=audit)
            # As kept (its times as the database holds them), so it reads as a read-back would.
            out = written.peek(Task, task.id) or task
            return service.to_out(await task_when_its_run_ended(out, wait_s) if wait_s else out)

    @get("/", guards=[READ])
    async def list_tasks(
        self,
        limit: Limit = 50,
        cursor: Cursor = None,
        status: Annotated[TaskStatus | None, Parameter(description="filter by status")] = None,
        goal_id: Filter = None,
        assignee_agent_id: Filter = None,
    ) -> Page[TaskOut]:
        filters = {
            k: v for k, v in {"status": status, "goal_id": goal_id, "assignee_agent_id": assignee_agent_id}.items() if v
        }
        docs, nxt = await page_of(Task, filters, limit, cursor)
        return Page([service.to_out(d) for d in docs], nxt)

    @get("/{task_id:str}", guards=[READ])
    async def get_task(self, task_id: FromPath[str]) -> TaskOut:
        return service.to_out(await service.get(task_id))

    @patch("/{task_id:str}", guards=[MANAGE_WORK])
    async def update_task(self, request: ApiRequest, task_id: FromPath[str], data: JSONBody[TaskUpdate]) -> TaskOut:
        task = await service.update(task_id, data)
        await record(request.user, "task.update", f"tasks/{task.id}", before_id=task.id, after_id=task.id)
        return service.to_out(task)

    @post("/{task_id:str}/status", guards=[MANAGE_WORK])
    async def move_task(self, request: ApiRequest, task_id: FromPath[str], data: JSONBody[TaskMove]) -> TaskOut:
        ctx: Context = request.app.state.ctx
        task = await engine.move_task(ctx, task_id, TaskStatus(data.status))
        await record(request.user, f"task.{data.status}", f"tasks/{task.id}", before_id=task.id, after_id=task.id)
        if task.status == TaskStatus.READY.value:
            await engine.dispatch(ctx, task)
        # The task as dispatching left it (this process wrote it last), else as stored.
        return service.to_out(written.peek(Task, task.id) or await service.get(task.id))

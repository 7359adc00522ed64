"""The board: GET /v1/board, card moves, the SSE feed of moves, and board provider settings."""

from typing import Annotated

from litestar import Controller, delete, get, post, put
from litestar.params import FromPath, JSONBody, Parameter
from litestar.response import ServerSentEvent

from nexus.core_api.held import held_stream
from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import MANAGE_KEYS, MANAGE_WORK, READ
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.board import providers, service
from nexus.core_api.board.columns import column_of
from nexus.core_api.board.schemas import BoardOut, BoardProviderIn, BoardProviderOut, CardMove, CardOut
from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError
from nexus.core_api.named import named_id
from nexus.core_api.runs.stream import jetstream_events, parse_last_event_id
from nexus.core_api.tasks import service as tasks
from nexus.core_api.workflow import engine
from nexus.db.documents import Agent, Repository
from nexus.domain.json_types import JsonObject
from nexus.domain.tasks import TaskStatus
from nexus.events.catalog import EVENTS_STREAM, spec


async def _id_of(doc_cls: type[Agent | Repository], ref: str, field: str) -> str:
    return await named_id(doc_cls, ref, kind=field, field=field, live=False)  # a filter may name a deleted one


async def _card(task_id: str) -> CardOut:
    for col in (await service.board({"_id": task_id})).columns:
        if col.cards:
            return col.cards[0]
    raise DomainError(404, f"task {task_id!r} not found")


class BoardController(Controller):
    path = "/v1/board"
    tags = ["board"]

    @get("/", guards=[READ])
    async def get_board(
        self,
        goal_id: Annotated[str | None, Parameter(max_length=200, description="only this goal's cards")] = None,
        repository: Annotated[str | None, Parameter(max_length=200, description="repository id or name")] = None,
        assignee: Annotated[str | None, Parameter(max_length=200, description="agent id or name")] = None,
        final_limit: Annotated[int, Parameter(ge=1, le=500, description="newest cards shown per final column")] = (
            service.FINAL_SHOWN
        ),
    ) -> BoardOut:
        filters: JsonObject = {}
        if goal_id:
            filters["goal_id"] = goal_id
        if repository:
            filters["repository_id"] = await _id_of(Repository, repository, "repository")
        if assignee:
            filters["assignee_agent_id"] = await _id_of(Agent, assignee, "assignee")
        return await service.board(filters, final_limit)

    @get("/events", guards=[READ])
    async def board_events(self, request: ApiRequest) -> ServerSentEvent:
        """Card moves: replays from after Last-Event-ID (the stream sequence), then follows."""
        ctx: Context = request.app.state.ctx
        after = parse_last_event_id(request.headers.get("last-event-id"))
        return held_stream(
            request.app.state,
            request.user,
            request.auth,
            jetstream_events(
                ctx.js,
                spec("board.card_moved").subject,
                after_seq=after,
                keepalive_s=ctx.settings.sse_keepalive_s,
                stream=EVENTS_STREAM,
            ),
        )

    @post("/cards/{task_id:str}/move", guards=[MANAGE_WORK], status_code=200)
    async def move_card(self, request: ApiRequest, task_id: FromPath[str], data: JSONBody[CardMove]) -> CardOut:
        """Move a card to another column (the task state machine decides; a refused move is a 409
        naming the rule) and/or up and down within its column."""
        ctx: Context = request.app.state.ctx
        task = await tasks.get(task_id)
        if data.column is None and data.direction is None:
            raise DomainError(422, "say where the card goes: a column, a direction or both", field="column")
        if data.column is not None and data.column != column_of(task.status):
            target = service.target_status(data.column)
            await service.forget_rank(task.id)
            task = await engine.move_task(ctx, task.id, target)
            await record(
                request.user, f"board.move.{data.column}", f"tasks/{task.id}", before_id=task.id, after_id=task.id
            )
            if task.status == TaskStatus.READY.value:
                await engine.dispatch(ctx, task)
        if data.direction is not None:
            await service.rerank(ctx, await tasks.get(task.id), data.direction)
            await record(
                request.user, f"board.rank.{data.direction}", f"tasks/{task.id}", before_id=task.id, after_id=task.id
            )
        return await _card(task.id)


class BoardProviderController(Controller):
    path = "/v1/board/providers"
    tags = ["board"]

    @get("/", guards=[MANAGE_KEYS])
    async def list_providers(self) -> list[BoardProviderOut]:
        return await providers.list_all()

    @get("/{scope_ref:str}", guards=[MANAGE_KEYS])
    async def get_provider(self, scope_ref: FromPath[str]) -> BoardProviderOut:
        return await providers.get(scope_ref)

    @put("/{scope_ref:str}", guards=[MANAGE_KEYS])
    async def put_provider(
        self, request: ApiRequest, scope_ref: FromPath[str], data: JSONBody[BoardProviderIn]
    ) -> BoardProviderOut:
        """`scope` is `default` or a repository (id or name). Credentials are secret names."""
        out = await providers.put(scope_ref, data, request.user.key_id)
        await record(request.user, "board.provider.set", f"board/providers/{out.scope}", after_id=out.scope)
        return out

    @delete("/{scope_ref:str}", guards=[MANAGE_KEYS])
    async def delete_provider(self, request: ApiRequest, scope_ref: FromPath[str]) -> None:
        await providers.delete(scope_ref)
        await record(request.user, "board.provider.delete", f"board/providers/{scope_ref}", before_id=scope_ref)

import asyncio
from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, Parameter, QueryParameter
from litestar.response import ServerSentEvent

from nexus.core_api.held import held_stream, waiting
from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import MANAGE_WORK, READ
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError, not_found
from nexus.core_api.pagination import Cursor, Filter, Limit, Page, page_of
from nexus.core_api.runs.schemas import RunAction, RunOut, to_out
from nexus.core_api.runs.stream import parse_last_event_id, run_stored_final, run_stream
from nexus.core_api.workflow.waiting import WaitS, when_ended
from nexus.core_api.workflow import engine
from nexus.core_api.workflow.launch import NoConfig
from nexus.db.cache import cached_find, cached_get
from nexus.core_api.sessions.schemas import outs as session_outs
from nexus.db.documents import Run, Session
from nexus.db.writes import written
from nexus.db.run_configs import config_of
from nexus.domain.json_types import JsonObject
from nexus.domain.runs import RUN_FINAL, RunStatus


async def _get(run_id: str) -> Run:
    run = await cached_get(Run, run_id)
    if run is None:
        raise not_found("run", run_id)
    return run


class RunController(Controller):
    path = "/v1/runs"
    tags = ["runs"]

    @get("/", guards=[READ])
    async def list_runs(
        self,
        limit: Limit = 50,
        cursor: Cursor = None,
        status: Annotated[RunStatus | None, Parameter(description="filter by status")] = None,
        agent_id: Filter = None,
        task_id: Filter = None,
        goal_id: Filter = None,
    ) -> Page[RunOut]:
        filters = {
            k: v
            for k, v in {"status": status, "agent_id": agent_id, "task_id": task_id, "goal_id": goal_id}.items()
            if v
        }
        docs, nxt = await page_of(Run, filters, limit, cursor)
        return Page([to_out(d) for d in docs], nxt)

    @get("/{run_id:str}", guards=[READ])
    async def get_run(
        self,
        request: ApiRequest,
        run_id: FromPath[str],
        with_config: Annotated[
            bool, QueryParameter(name="config", description="include the run's config (its own read)")
        ] = True,
        wait_s: WaitS = 0,
    ) -> RunOut:
        # Waiting, the run as this process last wrote it will do to start from (it is read again at its end).
        run = (wait_s and written.peek(Run, run_id)) or await _get(run_id)
        if wait_s:
            async with waiting(request, wait_s):
                run = await when_ended(run, wait_s)

        async def config() -> JsonObject | None:
            return await config_of(run.id) if with_config else None

        sessions, cfg = await asyncio.gather(cached_find(Session, {"run_id": run.id}, [("created_at", 1)], 0), config())
        return to_out(run, await session_outs(sessions), cfg)

    @get("/{run_id:str}/events", guards=[READ])
    async def run_events(self, request: ApiRequest, run_id: FromPath[str]) -> ServerSentEvent:
        """Replays the run's events, follows live ones, and ends after the run's final status."""
        # The run as this process last wrote it will do (its status only moves on); else it is read.
        run = written.peek(Run, run_id) or await _get(run_id)
        ctx: Context = request.app.state.ctx
        after = parse_last_event_id(request.headers.get("last-event-id"))
        return held_stream(
            request.app.state,
            request.user,
            request.auth,
            run_stream(
                ctx.run_feed,
                run.id,
                after_seq=after,
                keepalive_s=ctx.settings.sse_keepalive_s,
                stored_final=run_stored_final(run.id, run.status),
            ),
        )

    @post(
        "/{run_id:str}/cancel",
        guards=[MANAGE_WORK],
        responses={202: ResponseSpec(RunOut, description="Cancelled; its runner is stopped once the bus is back")},
    )
    async def cancel_run(
        self, request: ApiRequest, run_id: FromPath[str], data: JSONBody[RunAction | None] = None
    ) -> Response[RunOut]:
        """The run ends `cancelled` at once (stored before anything else). 201 when its runner was told to
        stop; 202 when the bus was out of reach: nothing is lost, the worker is told once the bus is back
        (and stops a cancelled run's runner by itself meanwhile), so a retry is neither needed nor harmful."""
        run = await _get(run_id)
        if RunStatus(run.status) in RUN_FINAL:
            raise DomainError(409, f"run is already {run.status}", field="status")
        ctx: Context = request.app.state.ctx
        _, told = await engine.cancel_run(ctx, run.id, (data.reason if data else "") or "cancelled by an operator")
        await record(request.user, "run.cancel", f"runs/{run.id}", before_id=run.id, after_id=run.id)
        return Response(to_out(await _get(run_id)), status_code=201 if told else 202)

    @post("/{run_id:str}/retry", guards=[MANAGE_WORK])
    async def retry_run(self, request: ApiRequest, run_id: FromPath[str]) -> RunOut:
        """A new run of the same task with the same pinned config; the old run stays as it ended."""
        run = await _get(run_id)
        if RunStatus(run.status) not in RUN_FINAL:
            raise DomainError(409, f"run is still {run.status}", field="status")
        ctx: Context = request.app.state.ctx
        try:
            new = await engine.retry_run(ctx, run)
        except NoConfig:
            raise DomainError(409, "the run has no stored config to retry it with", field="config") from None
        await record(request.user, "run.retry", f"runs/{new.id}", before_id=run.id, after_id=new.id)
        return to_out(new)

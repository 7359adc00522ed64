"""The work: the board (columns per goal, live), tasks, runs (live events, attempts, session changes,
ledger verdict, cancel and retry)."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, ServerSentEvent, ServerSentEventMessage

from nexus.core_api.held import held_stream
from nexus.core_api.auth.guards import MANAGE_WORK, READ
from nexus.core_api.board.columns import COLUMNS, TARGET_STATUS
from nexus.core_api.context import Context
from nexus.core_api.runs.stream import (
    StreamSeq,
    jetstream_events,
    not_an_event,
    parse_last_event_id,
    run_stored_final,
    run_stream,
)
from nexus.core_api.ui.api import Api
from nexus.core_api.ui.auth import UiRequest
from nexus.core_api.ui.render import form_of, page
from nexus.core_api.ui.shown import contents, diff_lines
from nexus.db import run_events
from nexus.domain.json_types import JsonObject
from nexus.domain.runs import RUN_FINAL
from nexus.domain.tasks import TaskStatus, can_move_task
from nexus.events.catalog import EVENTS_STREAM

BOARD_TYPES = {"board.card_moved", "run.*", "approval.*", "task.*"}
EVENTS_SHOWN = 500
PAGE = 25  # rows per list page: what a person reads at once; "Older" pages on
_SUMMARY_KEYS = (
    "message",
    "text",
    "status",
    "path",
    "relPath",
    "rel_path",
    "cmd",
    "exitCode",
    "command",
    "tool",
    "name",
    "action",
    "decision",
    "detail",
    "reason",
    "summary",
    "sha",
    "branch",
    "phase",
    "childSessionId",
)


def moves_for(status: str, column: str) -> list[str]:
    """The columns a person may drop this card in: those the task state machine allows from here."""
    return [c for c, target in TARGET_STATUS.items() if c != column and can_move_task(TaskStatus(status), target)]


def event_line(type_: str, data: dict[str, Any]) -> str:
    if isinstance(data.get("change"), dict):  # a session change: its own fields say what happened
        data = data["change"]
    parts = [
        f"{k}={data[k]}" for k in _SUMMARY_KEYS if isinstance(data.get(k), (str, int, float)) and data.get(k) != ""
    ]
    text = " ".join(parts) if parts else json.dumps(data, default=str)
    return text[:400]


def _held(request: UiRequest, messages: AsyncIterator[ServerSentEventMessage]) -> ServerSentEvent:
    """A page's stream, held by the signed-in key like the API's own (`nexus.core_api.held`)."""
    assert request.user is not None and request.auth is not None and request.auth.key  # the READ guard passed
    return held_stream(request.app.state, request.user, request.auth.key, messages)


def _render(request: UiRequest, name: str, **context: Any) -> str:
    engine = request.app.template_engine
    if engine is None:
        raise RuntimeError("the app has no template engine (create_app sets the UI's)")
    html: str = engine.get_template(name).render(**context)  # the app holds its engine untyped: Jinja renders str
    return html


async def _board(api: Api, goal_id: str | None) -> JsonObject:
    board, goal_list = await asyncio.gather(api.get("/v1/board", goal_id=goal_id), api.get("/v1/goals", limit=200))
    goals = {g["id"]: g for g in goal_list["items"]}
    lanes: dict[str | None, JsonObject] = {}
    for col in board["columns"]:
        for card in col["cards"]:
            lane = lanes.setdefault(
                card["goal_id"],
                {
                    "goal": goals.get(card["goal_id"]),
                    "goal_id": card["goal_id"],
                    "columns": {c: [] for c, _ in COLUMNS},
                },
            )
            card["moves"] = moves_for(card["status"], card["column"])
            lane["columns"][card["column"]].append(card)
    order = sorted(lanes.values(), key=lambda lane: (lane["goal_id"] is None, lane["goal_id"] or ""), reverse=False)
    more = {c["id"]: c.get("more", False) for c in board["columns"]}
    return {"lanes": order, "titles": dict(COLUMNS), "goal_id": goal_id or "", "more": more}


def live_status(run: dict[str, Any], events: list[tuple[str, dict[str, Any]]]) -> str:
    """The status the run page starts from: the last `run.status` among the events it shows, when it is
    of the run's current attempt and the run is not final. The page's live stream continues after those
    events, so its status must agree with them: the run read just before them can be a step behind (its
    events of one fetch are stored together, its status a moment later), and a status already shown as
    an event is never streamed again."""
    status = str(run.get("status", ""))
    if status in RUN_FINAL:
        return status
    for type_, data in reversed(events):
        if type_ == "run.status":
            if data.get("attempt", 1) == run.get("attempt", 1) and data.get("status"):
                return str(data["status"])
            break
    return status


class BoardPages(Controller):
    path = "/board"

    @get("/", guards=[READ])
    async def board(self, request: UiRequest, goal_id: FromQuery[str | None] = None) -> Response[Any]:
        ctx: Context = request.app.state.ctx
        after = (await ctx.js.stream_info(EVENTS_STREAM)).state.last_seq  # before the read: no move can fall between
        return page(request, "board.html", after=after, **await _board(Api(request), goal_id))

    @get("/lanes", guards=[READ])
    async def lanes(self, request: UiRequest, goal_id: FromQuery[str | None] = None) -> Response[Any]:
        return page(request, "_lanes.html", **await _board(Api(request), goal_id))

    @get("/stream", guards=[READ])
    async def stream(self, request: UiRequest, after: StreamSeq = 0) -> ServerSentEvent:
        """A nudge per board-relevant fact after the page's read (or after Last-Event-ID); the page
        re-reads the board."""
        ctx: Context = request.app.state.ctx
        after = (
            parse_last_event_id(request.headers.get("last-event-id"))
            or after
            or (await ctx.js.stream_info(EVENTS_STREAM)).state.last_seq
        )

        async def nudges() -> AsyncIterator[ServerSentEventMessage]:
            async for m in jetstream_events(
                ctx.js,
                "nexus.evt.>",
                after_seq=after,
                keepalive_s=ctx.settings.sse_keepalive_s,
                types=BOARD_TYPES,
                stream=EVENTS_STREAM,
            ):
                yield (
                    m if not_an_event(m) else ServerSentEventMessage(event="board-changed", data=m.event or "", id=m.id)
                )

        return _held(request, nudges())

    @post("/cards/{task_id:str}/move", guards=[MANAGE_WORK])
    async def move(self, request: UiRequest, task_id: FromPath[str]) -> Response[Any]:
        form = await form_of(request)
        body = {k: form[k] for k in ("column", "direction") if form.get(k)}
        result = await Api(request).post(f"/v1/board/cards/{task_id}/move", body)
        if not result.ok:
            return page(request, "error.html", status=result.status, status_code=result.status, detail=result.detail)
        return Redirect(f"/ui/board?goal_id={form['goal_id']}" if form.get("goal_id") else "/ui/board", status_code=303)


class TaskPages(Controller):
    path = "/tasks"

    @get("/new", guards=[MANAGE_WORK])
    async def new_task(self, request: UiRequest, goal_id: FromQuery[str | None] = None) -> Response[Any]:
        agents = (await Api(request).get("/v1/agents", limit=200))["items"]
        return page(request, "task_form.html", agents=agents, form={"goal_id": goal_id or ""}, errors={})

    @post("/", guards=[MANAGE_WORK])
    async def create_task(self, request: UiRequest) -> Response[Any]:
        form = await form_of(request)
        body = {
            k: form[k].strip()
            for k in ("title", "description", "assignee", "repository", "goal_id", "status")
            if form.get(k, "").strip()
        }
        api = Api(request)
        result = await api.post("/v1/tasks", body)
        if not result.ok:
            agents = (await api.get("/v1/agents", limit=200))["items"]
            return page(request, "task_form.html", status=result.status, agents=agents, form=form, errors=result.errors)
        run_id = result.body.get("current_run_id")
        return Redirect(f"/ui/runs/{run_id}" if run_id else f"/ui/tasks/{result.body['id']}", status_code=303)

    @get("/{task_id:str}", guards=[READ])
    async def task(self, request: UiRequest, task_id: FromPath[str]) -> Response[Any]:
        api = Api(request)
        task, runs = await asyncio.gather(  # a task is named by its id alone: both reads can go at once
            api.get(f"/v1/tasks/{task_id}"), api.get("/v1/runs", task_id=task_id, limit=PAGE)
        )
        return page(request, "task.html", task=task, runs=runs["items"])


async def _run_view(api: Api, run_id: str) -> JsonObject:
    run, approvals = await asyncio.gather(  # a run is named by its id alone: both reads can go at once
        # the page shows no config: the run alone (its config is a read of its own)
        api.get(f"/v1/runs/{run_id}", config="false"),
        api.get("/v1/approvals", run_id=run_id, status="all", limit=100),
    )
    return {"run": run, "approvals": approvals["items"], "cost": (run.get("usage") or {}).get("cost_usd")}


class RunPages(Controller):
    path = "/runs"

    @get("/", guards=[READ])
    async def runs(
        self,
        request: UiRequest,
        status: FromQuery[str | None] = None,
        agent_id: FromQuery[str | None] = None,
        task_id: FromQuery[str | None] = None,
        goal_id: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> Response[Any]:
        filters = {"status": status, "agent_id": agent_id, "task_id": task_id, "goal_id": goal_id}
        result = await Api(request).call("GET", "/v1/runs", params={**filters, "cursor": cursor, "limit": PAGE})
        body = result.body if result.ok else {"items": [], "next_cursor": None}
        return page(
            request,
            "runs.html",
            status=result.status,
            runs=body["items"],
            next_cursor=body["next_cursor"],
            filters={k: v or "" for k, v in filters.items()},
            errors=result.errors,
        )

    @get("/{run_id:str}", guards=[READ])
    async def run(self, request: UiRequest, run_id: FromPath[str]) -> Response[Any]:
        api = Api(request)
        view = await _run_view(api, run_id)
        verdict, events, shown = await asyncio.gather(
            api.call("GET", f"/v1/runs/{run_id}/verify"),
            run_events.events_of(view["run"]["id"], newest=EVENTS_SHOWN),
            contents(view["run"]["id"]),
        )
        view["run"]["status"] = live_status(view["run"], [(e.type, e.data) for e in events])
        return page(
            request,
            "run.html",
            **view,
            verdict=verdict.body if verdict.ok else None,
            events=[
                {"seq": e.stream_seq, "type": e.type, "at": e.occurred_at, "line": event_line(e.type, e.data)}
                for e in events
            ],
            after=events[-1].stream_seq if events else 0,
            shown=shown,
            diff_lines=diff_lines,
        )

    @get("/{run_id:str}/summary", guards=[READ])
    async def summary(self, request: UiRequest, run_id: FromPath[str]) -> Response[Any]:
        return page(request, "_run_summary.html", **await _run_view(Api(request), run_id))

    @get("/{run_id:str}/stream", guards=[READ])
    async def stream(self, request: UiRequest, run_id: FromPath[str], after: StreamSeq = 0) -> ServerSentEvent:
        """The run's events as list items, from after Last-Event-ID (a reconnect) or `after` (what the page showed)."""
        run = await Api(request).get(f"/v1/runs/{run_id}", config="false")  # 404 for a run that does not exist
        ctx: Context = request.app.state.ctx
        start = parse_last_event_id(request.headers.get("last-event-id")) or max(0, after)

        async def items() -> AsyncIterator[ServerSentEventMessage]:
            async for m in run_stream(
                ctx.run_feed,
                run_id,
                after_seq=start,
                keepalive_s=ctx.settings.sse_keepalive_s,
                stored_final=run_stored_final(run_id, str(run.get("status", ""))),
            ):
                if not_an_event(m):
                    yield m
                    continue
                env = json.loads(str(m.data))
                data = env.get("data")
                if not isinstance(data, dict):  # an envelope kept by the stream with no object in it: shown bare
                    data = {}
                html = _render(
                    request,
                    "_event.html",
                    e={
                        "seq": m.id,
                        "type": env.get("type"),
                        "at": env.get("occurred_at", ""),
                        "line": event_line(env.get("type", ""), data),
                    },
                )
                yield ServerSentEventMessage(event="run-event", data=html.strip(), id=m.id)
                if env.get("type") == "run.status":
                    status = _render(request, "_status.html", s=str(data.get("status", "")))
                    yield ServerSentEventMessage(event="run-status", data=status.strip())
            yield ServerSentEventMessage(event="end", data="the run has ended")

        return _held(request, items())

    @post("/{run_id:str}/cancel", guards=[MANAGE_WORK])
    async def cancel(self, request: UiRequest, run_id: FromPath[str]) -> Response[Any]:
        form = await form_of(request)
        result = await Api(request).post(f"/v1/runs/{run_id}/cancel", {"reason": form.get("reason", "")})
        if not result.ok:
            return page(request, "error.html", status=result.status, status_code=result.status, detail=result.detail)
        return Redirect(f"/ui/runs/{run_id}", status_code=303)

    @post("/{run_id:str}/retry", guards=[MANAGE_WORK])
    async def retry(self, request: UiRequest, run_id: FromPath[str]) -> Response[Any]:
        result = await Api(request).post(f"/v1/runs/{run_id}/retry")
        if not result.ok:
            return page(request, "error.html", status=result.status, status_code=result.status, detail=result.detail)
        return Redirect(f"/ui/runs/{result.body['id']}", status_code=303)

"""The internal board: cards are tasks; their column comes from the task (and run) status and
their place in a column from an explicit rank a person can change."""

import asyncio
import math
from typing import Any

from nexus.core_api.board.columns import COLUMNS, TARGET_STATUS, column_of
from nexus.core_api.board.schemas import BoardOut, CardOut, ColumnOut, RunBrief
from nexus.core_api.context import Context
from nexus.core_api.errors import DomainError
from nexus.core_api.pagination import page_of
from nexus.db.documents import Approval, Run, Task
from nexus.domain.tasks import TaskStatus
from nexus.events.payloads import BoardCardMoved

RANKS = "board_ranks"  # {_id: task id, rank: float}: only cards a person has placed have one
OPEN = ("backlog", "ready", "in_progress", "in_review")
# The final columns grow with history: they show their newest cards (the rest are in the task list).
FINAL_COLUMNS = {"done": ("done",), "failed_cancelled": ("failed", "cancelled")}
FINAL_SHOWN = 20


def _ranks_collection() -> Any:
    return Task.get_pymongo_collection().database[RANKS]


async def _ranks(task_ids: list[str]) -> dict[str, float]:
    return {d["_id"]: d["rank"] async for d in _ranks_collection().find({"_id": {"$in": task_ids}})}


def _order(tasks: list[Task], ranks: dict[str, float]) -> list[Task]:
    """Placed cards by their rank first, then the rest by priority and age."""
    return sorted(tasks, key=lambda t: (ranks.get(t.id, math.inf), -t.priority, t.created_at))


async def _final(filters: dict[str, Any], statuses: tuple[str, ...], limit: int) -> tuple[list[Task], bool]:
    """A final column's newest `limit` tasks (by the list pages' buckets), and whether older ones exist."""
    pages = await asyncio.gather(*(page_of(Task, {**filters, "status": s}, limit, None) for s in statuses))
    tasks = sorted((t for docs, _ in pages for t in docs), key=lambda t: t.id, reverse=True)
    return tasks[:limit], len(tasks) > limit or any(nxt for _, nxt in pages)


async def _runs_of(task_ids: list[str]) -> list[Run]:
    """Each card's runs by its task id: an equality the database answers from its index (an `$in`
    would read every run), so the board costs what its cards cost, not what history holds."""
    found = await asyncio.gather(*(Run.find({"task_id": tid}).to_list() for tid in task_ids))
    return [r for runs in found for r in runs]


def _brief(t: Task) -> dict[str, Any] | None:
    """The task's current run as it ended, kept on the task (`run_brief`), when it still is the task's
    current run and the task is not running it again: the card needs no read of the task's runs. A
    running card (its column follows its run) or a brief of an older run reads the runs."""
    brief = t.run_brief
    if not brief or not brief.get("id") or brief["id"] != t.current_run_id or t.status == TaskStatus.IN_PROGRESS.value:
        return None
    return brief


async def _waiting(run_ids: list[str]) -> dict[str, int]:
    """Pending approvals per run, for the runs the cards show."""
    waiting: dict[str, int] = {}
    if run_ids:
        async for a in Approval.find({"run_id": {"$in": run_ids}, "status": "pending"}):
            waiting[a.run_id] = waiting.get(a.run_id, 0) + 1
    return waiting


async def board(filters: dict[str, Any], final_limit: int = FINAL_SHOWN) -> BoardOut:
    """Open cards all, by status equality; each final column its newest `final_limit` cards. The reads
    that do not depend on each other go together: the board costs two round trips' time, not twenty."""
    open_, finals = await asyncio.gather(
        asyncio.gather(*(Task.find({**filters, "status": s}).to_list() for s in OPEN)),
        asyncio.gather(*(_final(filters, statuses, final_limit) for statuses in FINAL_COLUMNS.values())),
    )
    tasks = [t for found in open_ for t in found]
    more: dict[str, bool] = {}
    for col, (shown, more_of_col) in zip(FINAL_COLUMNS, finals, strict=True):
        tasks += shown
        more[col] = more_of_col
    tasks = [t for t in tasks if not t.is_meta]
    ids = [t.id for t in tasks]
    current = [t.current_run_id for t in tasks if t.current_run_id]
    briefs = {t.id: b for t in tasks if (b := _brief(t)) is not None}
    runs, waiting, ranks = await asyncio.gather(
        _runs_of([i for i in ids if i not in briefs]), _waiting(current), _ranks(ids)
    )
    by_id = {r.id: RunBrief(id=r.id, status=r.status) for r in runs}
    cost: dict[str, float] = {}
    for r in runs:
        cost[r.task_id] = cost.get(r.task_id, 0.0) + float((r.usage or {}).get("cost_usd", 0.0))
    for task_id, b in briefs.items():
        by_id[b["id"]] = RunBrief(id=b["id"], status=b["status"])
        cost[task_id] = float(b.get("cost_usd", 0.0))
    columns: dict[str, list[CardOut]] = {c: [] for c, _ in COLUMNS}
    for position, t in enumerate(_order(tasks, ranks)):
        run = by_id.get(t.current_run_id or "")
        col = column_of(t.status, run.status if run else None)
        columns[col].append(
            CardOut(
                task_id=t.id,
                title=t.title,
                status=t.status,
                column=col,
                rank=ranks.get(t.id, float(position + 1_000_000)),
                goal_id=t.goal_id,
                repository_id=t.repository_id,
                assignee_agent_id=t.assignee_agent_id,
                run=run,
                approvals_waiting=waiting.get(t.current_run_id or "", 0),
                cost_usd=round(cost.get(t.id, 0.0), 6),
            )
        )
    return BoardOut(
        columns=[ColumnOut(id=c, title=title, cards=columns[c], more=more.get(c, False)) for c, title in COLUMNS]
    )


async def publish_moved(
    ctx: Context, t: Task, *, rank: float | None = None, previous: str | None = None, msg_id: str | None = None
) -> None:
    await ctx.publisher.publish(
        "board.card_moved",
        BoardCardMoved(
            task_id=t.id,
            column=column_of(t.status),
            rank=rank,
            goal_id=t.goal_id,
            repository_id=t.repository_id,
            previous_column=previous,
        ),
        msg_id=msg_id,
    )


async def rerank(ctx: Context, task: Task, direction: str) -> float:
    """Move a card up/down/to the top/to the bottom of its column: the column's order is written
    down as ranks 1, 2, 3…, with the card in its new place."""
    col = column_of(task.status)
    peers = [t async for t in Task.find({"status": {"$in": _statuses_of(col)}, "is_meta": {"$ne": True}})]
    order = [t.id for t in _order(peers, await _ranks([t.id for t in peers]))]
    i = order.index(task.id)
    j = {"up": max(i - 1, 0), "down": min(i + 1, len(order) - 1), "top": 0, "bottom": len(order) - 1}[direction]
    order.insert(j, order.pop(i))
    coll = _ranks_collection()
    for n, tid in enumerate(order, start=1):
        await coll.update_one({"_id": tid}, {"$set": {"rank": float(n)}}, upsert=True)
    await publish_moved(ctx, task, rank=float(j + 1), previous=col)
    return float(j + 1)


def _statuses_of(column: str) -> list[str]:
    if column in ("running", "waiting_approval"):
        return ["in_progress"]
    if column == "failed_cancelled":
        return ["failed", "cancelled"]
    return [column]


def target_status(column: str) -> TaskStatus:
    if column not in TARGET_STATUS:
        raise DomainError(
            409, f"a card enters {column} only when its run does: a person cannot move it there", field="column"
        )
    return TARGET_STATUS[column]


async def forget_rank(task_id: str) -> None:
    """A card that changes column goes to the end of its new column."""
    await _ranks_collection().delete_one({"_id": task_id})

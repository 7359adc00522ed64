"""Budgets as core-api enforces them: what a run may spend when it is dispatched, a task kept waiting
("blocked: budget") while a budget is spent, the 80% / 100% alerts, and raising a budget."""

import logging
from typing import Any, Literal, cast

import msgspec

from nexus.core_api.budgets import spend
from nexus.core_api.context import Context
from nexus.db.cache import cached_get
from nexus.db.documents import Agent, AgentBudget, Goal, Task
from nexus.db.writes import update_document
from nexus.domain.budgets import WARNING_FRACTION, Cap, Spend, split
from nexus.domain.json_types import JsonObject
from nexus.events.payloads import BudgetAlert

log = logging.getLogger("nexus.core_api.budgets")
Scope = Literal["goal", "agent", "run"]


def cap_of(doc: JsonObject | None) -> Cap:
    return msgspec.convert(doc or {}, Cap)


def as_doc(cap: Cap) -> JsonObject:
    return cast(JsonObject, msgspec.to_builtins(cap))  # a Cap encodes as an object


async def agent_cap(agent_id: str) -> Cap:
    # Read at each dispatch and each run's end; most agents have none: their absence is cached too.
    doc = await cached_get(AgentBudget, agent_id, keep_missing=True)
    return Cap(usd=doc.daily_usd, tokens=doc.daily_tokens) if doc else Cap()


class Blocked(Exception):
    """A budget the work would spend from is spent; the message says which."""


Check = tuple[Scope, str, Cap, Spend, JsonObject]  # (scope, its id, the cap, spent from it, {task_id} for a share)


async def _budgets_of(task: Task, agent_id: str) -> list[Check]:
    """The budgets a run of `task` spends from: its share of its goal's, its goal's, its agent's day."""
    checks: list[Check] = []
    if task.budget:
        share = cap_of(task.budget)
        checks.append(("goal", task.goal_id or task.id, share, await spend.of_task(task.id), {"task_id": task.id}))
    if task.goal_id and (goal := await Goal.get(task.goal_id)) is not None and goal.budget:
        used, _ = await spend.of_goal(goal.id)
        checks.append(("goal", goal.id, cap_of(goal.budget), used, {}))
    daily = await agent_cap(agent_id)
    if not daily.empty:
        checks.append(("agent", agent_id, daily, await spend.of_agent_today(agent_id), {}))
    return checks


def _named(scope: Scope, scope_id: str, extra: JsonObject) -> str:
    return f"{scope} {scope_id}" + (f" (task {extra['task_id']}'s share)" if extra else "")


async def spent_budget(task: Task, run_id: str, limit_usd: float | None) -> str:
    """Which budget stopped a run of `task` (`budget_exceeded`), and how much of it was spent: of those
    it ran under — its share, its goal's, its agent's day, the run's own `max_cost_usd` — the one most
    used (the runner stops before a call that could pass the tightest, so it may not be quite spent)."""
    checks = await _budgets_of(task, task.assignee_agent_id or "")
    if limit_usd is not None:
        checks.append(("run", run_id, Cap(usd=limit_usd), spend.total(await spend.by_run([run_id])), {}))
    if not checks:
        return ""
    scope, scope_id, cap, used, extra = max(checks, key=lambda c: c[2].reached_fraction(c[3]))
    return f"{_named(scope, scope_id, extra)}: {_amount(used, cap)} spent"


async def allowance(ctx: Context, task: Task, agent: Agent) -> Cap:
    """The most a run of `task` may spend: the tightest of what is left of the task's share, of its
    goal's budget and of its agent's day. Raises Blocked (after alerting) when one is spent."""
    allowed = Cap()
    for scope, scope_id, cap, used, extra in await _budgets_of(task, agent.id):
        if cap.exhausted(used):
            what = _named(scope, scope_id, extra)
            await alert(
                ctx,
                "exceeded",
                scope,
                scope_id,
                cap,
                used,
                goal_id=task.goal_id,
                agent_id=agent.id,
                task_id=task.id,
                detail=f"{what} is spent: task {task.id} waits until the budget is raised",
            )
            raise Blocked(f"budget: {what} spent ({_amount(used, cap)})")
        allowed = allowed.tightest(cap.left(used))
    return allowed


def _amount(used: Spend, cap: Cap) -> str:
    parts = []
    if cap.usd is not None:
        parts.append(f"{used.usd:.6f} of {cap.usd} USD")
    if cap.tokens is not None:
        parts.append(f"{used.tokens} of {cap.tokens} tokens")
    return ", ".join(parts)


async def block(ctx: Context, task: Task, why: str) -> None:
    """The task stays ready and says why it is not running; raising the budget dispatches it."""
    if task.blocked != why:
        await update_document(Task, task.id, {"$set": {"blocked": why}})
        task.blocked = why
    log.info("task %s not dispatched: %s", task.id, why)


async def alert(ctx: Context, level: str, scope: Scope, scope_id: str, cap: Cap, used: Spend, **fields: Any) -> None:
    """budget.warning / budget.exceeded, once per budget (and per day for an agent): the mark is set
    first with a filter that only matches without it, so two callers emit it once. A run's alert
    is said by the run's one end."""
    if scope != "run":
        mark = level if scope == "goal" else f"{spend.day_start().date().isoformat()}:{level}"
        key = f"budget_alerts.{mark}" if scope == "goal" else f"alerts.{mark}"
        res = await update_document(
            Goal if scope == "goal" else AgentBudget, scope_id, {"$set": {key: True}}, {key: {"$exists": False}}
        )
        if res.modified_count != 1:
            return
    await ctx.publisher.publish(
        f"budget.{level}",
        BudgetAlert(
            scope=scope,
            scope_id=scope_id,
            spent_usd=round(used.usd, 6),
            spent_tokens=used.tokens,
            cap_usd=cap.usd,
            cap_tokens=cap.tokens,
            **fields,
        ),
        correlation_id=fields.get("goal_id") or scope_id,
    )


async def check_alerts(
    ctx: Context, *, goal_id: str | None, agent_id: str | None, run_id: str | None = None, reason: str = ""
) -> None:
    """After a run ends: warn at 80% of its goal's budget or its agent's day, say when one is spent,
    and say when the run itself was stopped by its budget."""
    if goal_id and (goal := await Goal.get(goal_id)) is not None and goal.budget:
        cap = cap_of(goal.budget)
        used, _ = await spend.of_goal(goal_id)
        spend.observe("goal", goal_id, cap, used)
        await _threshold(ctx, "goal", goal_id, cap, used, goal_id=goal_id, agent_id=agent_id)
    if agent_id and not (cap := await agent_cap(agent_id)).empty:
        # Only an agent with a daily budget: its day's spend is read from every run of its day, a read
        # that grows with the day's history, and at every run's end it made each run dearer than the
        # last. What an uncapped agent spends is counted by the model-call metrics (by agent) anyway.
        used = await spend.of_agent_today(agent_id)
        spend.observe("agent", agent_id, cap, used)
        await _threshold(ctx, "agent", agent_id, cap, used, goal_id=goal_id, agent_id=agent_id)
    if run_id and reason == "budget_exceeded":
        used = spend.total(await spend.by_run([run_id]))
        await alert(
            ctx,
            "exceeded",
            "run",
            run_id,
            Cap(),
            used,
            goal_id=goal_id,
            agent_id=agent_id,
            run_id=run_id,
            detail=f"run {run_id} was stopped before a model call that could pass its budget",
        )


async def _threshold(ctx: Context, scope: Scope, scope_id: str, cap: Cap, used: Spend, **fields: Any) -> None:
    if cap.exhausted(used):
        await alert(ctx, "exceeded", scope, scope_id, cap, used, **fields)
    if cap.reached_fraction(used) >= WARNING_FRACTION:
        await alert(ctx, "warning", scope, scope_id, cap, used, **fields)


async def shares_for(goal_id: str | None, weights: list[float]) -> list[Cap]:
    """What is left of the goal's budget, split among children planned together (by weight)."""
    if not goal_id or (goal := await Goal.get(goal_id)) is None or not goal.budget:
        return [Cap() for _ in weights]
    used, _ = await spend.of_goal(goal_id)
    return split(cap_of(goal.budget).left(used), weights)

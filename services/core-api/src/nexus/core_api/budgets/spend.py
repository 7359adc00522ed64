"""What was spent: the sum of the model calls runs reported (`run.llm`), each stored once."""

from datetime import UTC, datetime

from prometheus_client import Gauge

from nexus.db import run_events
from nexus.db.documents import Run
from nexus.domain.budgets import Cap, Spend

SPENT_USD = Gauge("nexus_budget_spent_usd", "USD spent by a goal, or by an agent today", ["scope", "id"])
SPENT_TOKENS = Gauge("nexus_budget_spent_tokens", "Tokens spent by a goal, or by an agent today", ["scope", "id"])
LEFT_USD = Gauge("nexus_budget_remaining_usd", "USD left of a goal's budget, or of an agent's day", ["scope", "id"])
LEFT_TOKENS = Gauge(
    "nexus_budget_remaining_tokens", "Tokens left of a goal's budget, or of an agent's day", ["scope", "id"]
)


def day_start(at: datetime | None = None) -> datetime:
    at = at or datetime.now(UTC)
    return at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def by_run(run_ids: list[str], *, since: datetime | None = None) -> dict[str, Spend]:
    """Each run's spend so far (its model calls, every attempt), optionally only calls since `since`."""
    if not run_ids:
        return {}
    after = since.isoformat(timespec="milliseconds").replace("+00:00", "Z") if since is not None else None
    out: dict[str, Spend] = {}
    for run_id, d in await run_events.of_type(run_ids, "run.llm", since=after):
        call = Spend(
            usd=float(d.get("cost_usd") or 0.0),
            tokens=int(d.get("input_tokens") or 0) + int(d.get("output_tokens") or 0),
        )
        out[run_id] = out.get(run_id, Spend()) + call
    return out


def total(spends: dict[str, Spend]) -> Spend:
    return sum(spends.values(), Spend())


async def of_goal(goal_id: str) -> tuple[Spend, dict[str, Spend]]:
    runs = await Run.find({"goal_id": goal_id}).to_list()
    per_run = await by_run([r.id for r in runs])
    return total(per_run), per_run


async def of_task(task_id: str) -> Spend:
    runs = await Run.find({"task_id": task_id}).to_list()
    return total(await by_run([r.id for r in runs]))


async def of_agent_today(agent_id: str) -> Spend:
    start = day_start()
    runs = await Run.find({"agent_id": agent_id, "$or": [{"ended_at": None}, {"ended_at": {"$gte": start}}]}).to_list()
    return total(await by_run([r.id for r in runs], since=start))


def observe(scope: str, scope_id: str, cap: Cap, spent: Spend) -> None:
    SPENT_USD.labels(scope, scope_id).set(spent.usd)
    SPENT_TOKENS.labels(scope, scope_id).set(spent.tokens)
    left = cap.left(spent)
    if left.usd is not None:
        LEFT_USD.labels(scope, scope_id).set(left.usd)
    if left.tokens is not None:
        LEFT_TOKENS.labels(scope, scope_id).set(left.tokens)

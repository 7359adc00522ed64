"""What a bound chat user may read: goals, runs, approvals, agents and one thing's status. Each query
takes the request's arguments and returns plain data; the responder checks the principal first."""

from typing import Any

from nexus.core_api.errors import DomainError
from nexus.core_api.named import goal_refs
from nexus.core_api.schemas import iso
from nexus.db import run_events
from nexus.db.documents import Agent, Approval, Goal, Run, Task
from nexus.domain.json_types import JsonObject

ACTIVE_RUN = ("queued", "launching", "running", "waiting_approval")


def _cost(run: Run) -> float:
    return float((run.usage or {}).get("cost_usd", 0.0))


def run_row(r: Run) -> dict[str, Any]:
    return {
        "id": r.id,
        "status": r.status,
        "agent_id": r.agent_id,
        "task_id": r.task_id,
        "goal_id": r.goal_id,
        "cost_usd": _cost(r),
        "reason": r.reason,
        "summary": r.summary,
        "branch": r.branch,
        "commit_sha": r.commit_sha,
        "created_at": iso(r.created_at),
        "ended_at": iso(r.ended_at),
    }


def goal_row(g: Goal) -> dict[str, Any]:
    return {
        "id": g.id,
        "title": g.title,
        "status": g.status,
        "meta_run_id": g.meta_run_id,
        "created_by": g.created_by,
        "created_at": iso(g.created_at),
    }


def approval_row(a: Approval) -> dict[str, Any]:
    return {
        "id": a.id,
        "run_id": a.run_id,
        "action": a.action,
        "detail": a.detail,
        "status": a.status,
        "reason": a.reason,
        "decided_by": a.decided_by,
        "expires_at": iso(a.expires_at),
        "created_at": iso(a.created_at),
        "decided_at": iso(a.decided_at),
    }


async def goals(args: JsonObject) -> list[JsonObject]:
    return [goal_row(g) for g in await Goal.find({}).sort("-_id").limit(10).to_list()]


async def runs(args: JsonObject) -> JsonObject:
    active = await Run.find({"status": {"$in": list(ACTIVE_RUN)}}).sort("-_id").limit(10).to_list()
    recent = await Run.find({"status": {"$nin": list(ACTIVE_RUN)}}).sort("-_id").limit(10).to_list()
    return {"active": [run_row(r) for r in active], "recent": [run_row(r) for r in recent]}


async def approvals(args: JsonObject) -> list[JsonObject]:
    return [approval_row(a) for a in await Approval.find({"status": "pending"}).sort("-_id").limit(20).to_list()]


async def approval(args: JsonObject) -> JsonObject:
    a = await Approval.get(str(args.get("id", "")))
    if a is None:
        raise DomainError(404, f"approval {args.get('id')!r} not found", field="id")
    row = approval_row(a)
    run = await Run.get(a.run_id)
    if run is not None:
        task, agent = await Task.get(run.task_id), await Agent.get(run.agent_id)
        row.update(
            agent_id=run.agent_id,
            agent_name=agent.name if agent else run.agent_id,
            task_id=run.task_id,
            task_title=task.title if task else "",
            goal_id=run.goal_id,
        )
    return row


async def agents(args: JsonObject) -> list[JsonObject]:
    docs = await Agent.find({"deleted": False}).sort("+name").limit(50).to_list()
    return [
        {"id": a.id, "name": a.name, "revision": a.revision, "description": a.spec.get("description", "")} for a in docs
    ]


async def last_events(run_id: str, n: int = 5) -> list[JsonObject]:
    return [{"type": e.type, "data": e.data} for e in await run_events.events_of(run_id, newest=n)]


async def goal_report(goal_id: str) -> JsonObject:
    g = await Goal.get(goal_id)
    if g is None:
        raise DomainError(404, f"goal {goal_id!r} not found", field="id")
    tasks = await Task.find({"goal_id": goal_id}).to_list()
    goal_runs = await Run.find({"goal_id": goal_id}).to_list()
    return {
        "kind": "goal",
        **goal_row(g),
        "tasks": [{"id": t.id, "title": t.title, "status": t.status} for t in tasks],
        "runs": [run_row(r) for r in goal_runs],
        "cost_usd": sum(_cost(r) for r in goal_runs),
        "report": g.report,
    }  # stored when the goal ended (docs/goals.md)


async def status(args: JsonObject) -> JsonObject:
    """One goal, task, run or approval by id; without an id, the counts a lead glances at."""
    ident = str(args.get("id") or "")
    if not ident:
        return {
            "kind": "overview",
            "active_runs": await Run.find({"status": {"$in": list(ACTIVE_RUN)}}).count(),
            "pending_approvals": await Approval.find({"status": "pending"}).count(),
            "open_goals": await Goal.find({"status": {"$in": ["open", "planning", "in_progress"]}}).count(),
        }
    prefix = ident.split("_", 1)[0]
    if prefix == "goal":
        return await goal_report(ident)
    if prefix == "task":
        t = await Task.get(ident)
        if t is not None:
            return {
                "kind": "task",
                "id": t.id,
                "title": t.title,
                "status": t.status,
                "goal_id": t.goal_id,
                "current_run_id": t.current_run_id,
            }
    elif prefix == "run":
        r = await Run.get(ident)
        if r is not None:
            return {"kind": "run", **run_row(r), "last_events": await last_events(r.id)}
    elif prefix == "apr":
        return {"kind": "approval", **await approval({"id": ident})}
    raise DomainError(404, f"nothing called {ident!r}", field="id")


async def resolve_goal_refs(args: JsonObject) -> JsonObject:
    agent_id, repo_id = await goal_refs(args.get("meta_agent") or None, args.get("repository") or None)
    return {"meta_agent_id": agent_id, "repository_id": repo_id}


QUERIES = {
    "goals": goals,
    "runs": runs,
    "approvals": approvals,
    "approval": approval,
    "agents": agents,
    "status": status,
    "resolve_goal_refs": resolve_goal_refs,
}

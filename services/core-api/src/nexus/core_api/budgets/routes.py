"""An agent's daily budget: read it with today's spend; an admin or lead sets or raises it (audited),
and the tasks it held back are dispatched."""

from litestar import Controller, get, put
from litestar.params import FromPath, JSONBody

from nexus.core_api.audit.service import record
from nexus.core_api.auth.guards import MANAGE_WORK, READ
from nexus.core_api.auth.requests import ApiRequest
from nexus.core_api.budgets import service, spend
from nexus.core_api.budgets.schemas import AgentBudgetOut, BudgetIn, BudgetOut
from nexus.core_api.context import Context
from nexus.core_api.named import get_named
from nexus.core_api.workflow import engine
from nexus.db.documents import Agent, AgentBudget, now
from nexus.db.writes import update_document
from nexus.domain.budgets import Cap, Spend


def budget_out(cap: Cap, used: Spend) -> BudgetOut:
    left = cap.left(used)
    return BudgetOut(
        usd=cap.usd,
        tokens=cap.tokens,
        spent_usd=round(used.usd, 6),
        spent_tokens=used.tokens,
        left_usd=None if left.usd is None else round(left.usd, 6),
        left_tokens=left.tokens,
    )


class BudgetController(Controller):
    path = "/v1/budgets"
    tags = ["budgets"]

    @get("/agents/{agent_ref:str}", guards=[READ])
    async def get_agent_budget(self, agent_ref: FromPath[str]) -> AgentBudgetOut:
        agent = await get_named(Agent, agent_ref, "agent")
        cap = await service.agent_cap(agent.id)
        return AgentBudgetOut(agent_id=agent.id, budget=budget_out(cap, await spend.of_agent_today(agent.id)))

    @put("/agents/{agent_ref:str}", guards=[MANAGE_WORK])
    async def put_agent_budget(
        self, request: ApiRequest, agent_ref: FromPath[str], data: JSONBody[BudgetIn]
    ) -> AgentBudgetOut:
        ctx: Context = request.app.state.ctx
        agent = await get_named(Agent, agent_ref, "agent")
        # A new cap is a new budget: its alerts may be said again.
        await update_document(
            AgentBudget,
            agent.id,
            {
                "$set": {
                    "daily_usd": data.usd,
                    "daily_tokens": data.tokens,
                    "alerts": {},
                    "updated_by": request.user.key_id,
                    "updated_at": now(),
                }
            },
            upsert=True,
        )
        await record(request.user, "budget.update", f"budgets/agents/{agent.id}", after_id=agent.id)
        released = await engine.release(ctx, {"assignee_agent_id": agent.id})
        cap = await service.agent_cap(agent.id)
        return AgentBudgetOut(
            agent_id=agent.id, budget=budget_out(cap, await spend.of_agent_today(agent.id)), released_tasks=released
        )

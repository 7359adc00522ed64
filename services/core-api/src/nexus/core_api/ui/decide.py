"""Approvals (approve or reject with a reason), goals (progress, budget, the session tree, the report),
and, for admins, API keys and the audit log."""

import asyncio
from typing import Any

from litestar import Controller, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect

from nexus.core_api.auth.guards import DECIDE_APPROVALS, MANAGE_KEYS, MANAGE_WORK, READ
from nexus.core_api.ui.api import Api
from nexus.core_api.ui.auth import UiRequest
from nexus.core_api.ui.render import form_of, page
from nexus.core_api.ui.work import PAGE


async def _approvals(
    request: UiRequest, status: str, *, code: int = 200, errors: dict[str, str] | None = None, failed: str = ""
) -> Response[Any]:
    listing = await Api(request).get("/v1/approvals", status=status, limit=200)
    return page(
        request,
        "approvals.html",
        status=code,
        approvals=listing["items"],
        filter=status,
        errors=errors or {},
        failed=failed,
    )


class ApprovalPages(Controller):
    path = "/approvals"

    @get("/", guards=[READ])
    async def approvals(self, request: UiRequest, status: FromQuery[str] = "pending") -> Response[Any]:
        return await _approvals(
            request, status if status in ("pending", "approved", "rejected", "expired", "all") else "pending"
        )

    @post("/{approval_id:str}/{decision:str}", guards=[DECIDE_APPROVALS])
    async def decide(self, request: UiRequest, approval_id: FromPath[str], decision: FromPath[str]) -> Response[Any]:
        form = await form_of(request)
        verb = {"approve": "approve", "reject": "reject"}.get(decision)
        if verb is None:
            return page(request, "error.html", status=404, status_code=404, detail=f"no decision called {decision!r}")
        result = await Api(request).post(f"/v1/approvals/{approval_id}/{verb}", {"reason": form.get("reason", "")})
        if not result.ok:
            return await _approvals(request, "pending", code=result.status, errors=result.errors, failed=approval_id)
        back = form.get("back", "")
        return Redirect(back if back.startswith("/ui/") else "/ui/approvals", status_code=303)


class GoalPages(Controller):
    path = "/goals"

    @get("/", guards=[READ])
    async def goals(self, request: UiRequest) -> Response[Any]:
        api = Api(request)
        listing, agents = await asyncio.gather(api.get("/v1/goals", limit=200), api.get("/v1/agents", limit=200))
        return page(request, "goals.html", goals=listing["items"], agents=agents["items"], form={}, errors={})

    @post("/", guards=[MANAGE_WORK])
    async def create_goal(self, request: UiRequest) -> Response[Any]:
        form = await form_of(request)
        body = {
            k: form[k].strip() for k in ("title", "description", "meta_agent", "repository") if form.get(k, "").strip()
        }
        api = Api(request)
        result = await api.post("/v1/goals", body)
        if not result.ok:
            listing = await api.get("/v1/goals", limit=200)
            agents = (await api.get("/v1/agents", limit=200))["items"]
            return page(
                request,
                "goals.html",
                status=result.status,
                goals=listing["items"],
                agents=agents,
                form=form,
                errors=result.errors,
            )
        return Redirect(f"/ui/goals/{result.body['id']}", status_code=303)

    @get("/{goal_id:str}", guards=[READ])
    async def goal(self, request: UiRequest, goal_id: FromPath[str]) -> Response[Any]:
        """Tolerant of what a goal carries: progress, budget, cost and report are shown when the API has them."""
        api = Api(request)
        goal = await api.get(f"/v1/goals/{goal_id}")
        tasks = (await api.get(f"/v1/goals/{goal['id']}/tasks", limit=500))["items"]
        tree = None
        if goal.get("meta_run_id"):
            r = await api.call("GET", f"/v1/runs/{goal['meta_run_id']}/sessions/tree")
            tree = r.body if r.ok else None
        done = sum(1 for t in tasks if t["status"] == "done")
        return page(request, "goal.html", goal=goal, tasks=tasks, tree=tree, done=done)


class AdminPages(Controller):
    path = "/admin"

    @get("/keys", guards=[MANAGE_KEYS])
    async def keys(self, request: UiRequest) -> Response[Any]:
        return page(
            request,
            "keys.html",
            keys=(await Api(request).get("/v1/api-keys", limit=200))["items"],
            created=None,
            errors={},
            form={},
        )

    @post("/keys", guards=[MANAGE_KEYS])
    async def create_key(self, request: UiRequest) -> Response[Any]:
        form = await form_of(request)
        api = Api(request)
        result = await api.post("/v1/api-keys", {"name": form.get("name", "").strip(), "role": form.get("role", "")})
        keys = (await api.get("/v1/api-keys", limit=200))["items"]
        # The raw key is shown on this one response only, as the API shows it once.
        return page(
            request,
            "keys.html",
            status=result.status if not result.ok else 200,
            keys=keys,
            created=result.body if result.ok else None,
            errors=result.errors,
            form=form,
        )

    @post("/keys/{key_id:str}/revoke", guards=[MANAGE_KEYS])
    async def revoke(self, request: UiRequest, key_id: FromPath[str]) -> Response[Any]:
        result = await Api(request).call("DELETE", f"/v1/api-keys/{key_id}")
        if not result.ok:
            return page(request, "error.html", status=result.status, status_code=result.status, detail=result.detail)
        return Redirect("/ui/admin/keys", status_code=303)

    @get("/audit", guards=[MANAGE_KEYS])
    async def audit(
        self, request: UiRequest, action: FromQuery[str | None] = None, cursor: FromQuery[str | None] = None
    ) -> Response[Any]:
        result = await Api(request).call("GET", "/v1/audit", params={"action": action, "cursor": cursor, "limit": PAGE})
        body = result.body if result.ok else {"items": [], "next_cursor": None}
        return page(
            request,
            "audit.html",
            status=result.status,
            entries=body["items"],
            next_cursor=body["next_cursor"],
            action=action or "",
            errors=result.errors,
        )

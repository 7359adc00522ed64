"""Agents (form and YAML, revisions, diffs, the runs of each revision), skills and memory."""

import asyncio
import difflib
from typing import Annotated, Any

import yaml
from litestar import Controller, Response, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect

from nexus.core_api.auth.guards import MANAGE_AGENTS, READ
from nexus.core_api.ui.api import Api, ApiResult
from nexus.core_api.ui.auth import UiRequest
from nexus.core_api.ui.render import form_of, markdown, page, to_yaml, words
from nexus.domain.json_types import JsonObject


def spec_from_form(
    form: dict[str, str], base: dict[str, Any] | None = None
) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The agent spec a form describes: raw YAML as typed, or the form's fields over the current spec
    (fields the form does not show keep their values). The API validates either way."""
    if form.get("mode") == "yaml":
        try:
            data = yaml.safe_load(form.get("yaml", "")) or {}
        except yaml.YAMLError as exc:
            return None, {"yaml": f"not YAML: {exc}"}
        if not isinstance(data, dict):
            return None, {"yaml": "an agent is a mapping of fields (name, system_prompt, …)"}
        return data, {}
    spec = dict(base or {})
    spec.update(
        name=form.get("name", "").strip(),
        description=form.get("description", ""),
        system_prompt=form.get("system_prompt", ""),
        skills=words(form.get("skills", "")),
        tools=words(form.get("tools", "")),
    )
    if "ask" in form:
        spec["permissions"] = {**(spec.get("permissions") or {}), "ask": words(form["ask"])}
    llm = dict(spec.get("llm") or {})
    llm.update({k: form[f"llm_{k}"] for k in ("provider", "model") if form.get(f"llm_{k}")})
    if "llm_script" in form:
        llm["script"] = form["llm_script"] or None
    spec["llm"] = llm
    return spec, {}


RUNS_SHOWN = 25  # an agent's latest runs, by revision: older ones are on the runs page (one bucket's read)


async def _runs_by_revision(api: Api, agent_id: str) -> dict[int, list[JsonObject]]:
    runs: dict[int, list[JsonObject]] = {}
    for r in (await api.get("/v1/runs", agent_id=agent_id, limit=RUNS_SHOWN))["items"]:
        runs.setdefault(r["agent_revision"], []).append(r)
    return runs


class AgentPages(Controller):
    path = "/agents"

    @get("/", guards=[READ])
    async def agents(self, request: UiRequest, cursor: FromQuery[str | None] = None) -> Response[Any]:
        listing = await Api(request).get("/v1/agents", limit=100, cursor=cursor)
        return page(request, "agents.html", agents=listing["items"], next_cursor=listing["next_cursor"])

    @get("/new", guards=[MANAGE_AGENTS])
    async def new_agent(self, request: UiRequest) -> Response[Any]:
        return page(
            request,
            "agent_form.html",
            agent=None,
            spec={"llm": {"provider": "scripted", "model": "scripted"}},
            errors={},
        )

    @post("/", guards=[MANAGE_AGENTS])
    async def create_agent(self, request: UiRequest) -> Response[Any]:
        form = await form_of(request)
        spec, errors = spec_from_form(form)
        result = await Api(request).post("/v1/agents", spec) if spec is not None else ApiResult(422, None, errors)
        if not result.ok:
            return page(
                request,
                "agent_form.html",
                status=result.status,
                agent=None,
                spec=spec or {},
                errors=result.errors,
                form=form,
            )
        return Redirect(f"/ui/agents/{result.body['id']}", status_code=303)

    @get("/{agent_id:str}", guards=[READ])
    async def agent(self, request: UiRequest, agent_id: FromPath[str]) -> Response[Any]:
        api = Api(request)

        async def revisions_of(ref: str) -> ApiResult:
            return await api.call("GET", f"/v1/agents/{ref}/revisions", params={"limit": 200})

        # Named by its id (the usual link), the three reads go together; named otherwise, the reads
        # below wait for its id. A reference that is not the agent's id reads them again with it.
        agent, listed, runs = await asyncio.gather(
            api.get(f"/v1/agents/{agent_id}"), revisions_of(agent_id), _runs_by_revision(api, agent_id)
        )
        if agent["id"] != agent_id or not listed.ok:
            listed, runs = await asyncio.gather(revisions_of(agent["id"]), _runs_by_revision(api, agent["id"]))
        if not listed.ok:
            raise HTTPException(status_code=listed.status, detail=listed.detail or "the request failed")
        return page(
            request, "agent.html", agent=agent, spec=agent["spec"], revisions=listed.body["items"], runs=runs, errors={}
        )

    @post("/{agent_id:str}", guards=[MANAGE_AGENTS])
    async def update_agent(self, request: UiRequest, agent_id: FromPath[str]) -> Response[Any]:
        api = Api(request)
        agent = await api.get(f"/v1/agents/{agent_id}")
        form = await form_of(request)
        spec, errors = spec_from_form(form, agent["spec"])
        result = (
            await api.call("PUT", f"/v1/agents/{agent['id']}", json=spec)
            if spec is not None
            else ApiResult(422, None, errors)
        )
        if not result.ok:
            revisions = (await api.get(f"/v1/agents/{agent['id']}/revisions", limit=200))["items"]
            return page(
                request,
                "agent.html",
                status=result.status,
                agent=agent,
                spec=spec or agent["spec"],
                revisions=revisions,
                runs=await _runs_by_revision(api, agent["id"]),
                errors=result.errors,
                form=form,
            )
        return Redirect(f"/ui/agents/{agent['id']}", status_code=303)

    @get("/{agent_id:str}/diff", guards=[READ])
    async def diff(
        self, request: UiRequest, agent_id: FromPath[str], a: FromQuery[int], b: FromQuery[int]
    ) -> Response[Any]:
        api = Api(request)
        old = await api.get(f"/v1/agents/{agent_id}/revisions/{a}")
        new = await api.get(f"/v1/agents/{agent_id}/revisions/{b}")
        lines = list(
            difflib.unified_diff(
                to_yaml(old["spec"]).splitlines(),
                to_yaml(new["spec"]).splitlines(),
                f"revision {a}",
                f"revision {b}",
                lineterm="",
            )
        )
        return page(request, "diff.html", agent_id=agent_id, a=a, b=b, lines=lines)


class SkillPages(Controller):
    path = "/skills"

    @get("/", guards=[READ])
    async def skills(self, request: UiRequest) -> Response[Any]:
        return page(request, "skills.html", skills=(await Api(request).get("/v1/skills", limit=200))["items"])

    @get("/new", guards=[MANAGE_AGENTS])
    async def new_skill(self, request: UiRequest) -> Response[Any]:
        return page(request, "skill_form.html", skill=None, form={}, errors={})

    @post("/", guards=[MANAGE_AGENTS])
    async def save_skill(self, request: UiRequest) -> Response[Any]:
        form = await form_of(request)
        body = {
            "name": form.get("name", "").strip(),
            "description": form.get("description", ""),
            "content": form.get("content", ""),
        }
        api = Api(request)
        existing = form.get("skill_id")
        result = await (
            api.call("PUT", f"/v1/skills/{existing}", json=body) if existing else api.post("/v1/skills", body)
        )
        if not result.ok:
            return page(
                request,
                "skill_form.html",
                status=result.status,
                skill={"id": existing} if existing else None,
                form=form,
                errors=result.errors,
            )
        return Redirect(f"/ui/skills/{result.body['id']}", status_code=303)

    @post("/preview", guards=[READ])
    async def preview(self, request: UiRequest) -> Response[Any]:
        form = await form_of(request)
        return Response(str(markdown(form.get("content", ""))), media_type="text/html")

    @get("/{skill_id:str}", guards=[READ])
    async def skill(
        self, request: UiRequest, skill_id: FromPath[str], version: FromQuery[int | None] = None
    ) -> Response[Any]:
        api = Api(request)
        skill = await api.get(f"/v1/skills/{skill_id}")
        shown = await api.get(f"/v1/skills/{skill['id']}/versions/{version}") if version else skill
        versions = (await api.get(f"/v1/skills/{skill['id']}/versions", limit=200))["items"]
        return page(
            request,
            "skill.html",
            skill=skill,
            shown=shown,
            versions=versions,
            form={"name": skill["name"], "description": skill["description"], "content": skill["content"]},
            errors={},
        )


class MemoryPages(Controller):
    path = "/memory"

    @get("/", guards=[READ])
    async def memory(
        self,
        request: UiRequest,
        scope_: Annotated[str | None, QueryParameter(name="scope")] = None,
        agent: FromQuery[str | None] = None,
        query_: Annotated[str | None, QueryParameter(name="query")] = None,
    ) -> Response[Any]:
        """Items by scope, or — given an agent and a query — what a run of that agent would be handed,
        ranked as dispatch ranks."""
        api, scope, query = Api(request), scope_, query_  # `scope` and `query` are litestar's reserved names
        preview, status, errors = None, 200, {}
        if agent:
            r = await api.call("GET", f"/v1/agents/{agent}/memory/preview", params={"query": query or ""})
            preview, status, errors = (r.body, 200, {}) if r.ok else (None, r.status, r.errors)
        listing = await api.call("GET", "/v1/memory", params={"scope": scope, "limit": 200})
        if not listing.ok:
            status, errors = listing.status, {**errors, **listing.errors}
        return page(
            request,
            "memory.html",
            status=status,
            items=listing.body["items"] if listing.ok else [],
            preview=preview,
            scope=scope or "",
            agent=agent or "",
            query=query or "",
            errors=errors,
            form={},
        )

    @post("/", guards=[MANAGE_AGENTS])
    async def create(self, request: UiRequest) -> Response[Any]:
        form = await form_of(request)
        body: dict[str, Any] = {
            "scope": form.get("scope", ""),
            "content": form.get("content", ""),
            "tags": words(form.get("tags", "")),
        }
        if form.get("scope_id"):
            body["scope_id"] = form["scope_id"]
        if form.get("ttl_s"):
            body["ttl_s"] = int(form["ttl_s"]) if form["ttl_s"].isdigit() else form["ttl_s"]
        api = Api(request)
        result = await api.post("/v1/memory", body)
        if not result.ok:
            listing = await api.get("/v1/memory", limit=200)
            return page(
                request,
                "memory.html",
                status=result.status,
                items=listing["items"],
                preview=None,
                scope="",
                agent="",
                query="",
                errors=result.errors,
                form=form,
            )
        return Redirect("/ui/memory", status_code=303)

    @post("/{item_id:str}/delete", guards=[MANAGE_AGENTS])
    async def delete(self, request: UiRequest, item_id: FromPath[str]) -> Response[Any]:
        result = await Api(request).call("DELETE", f"/v1/memory/{item_id}")
        if not result.ok:
            return page(request, "error.html", status=result.status, status_code=result.status, detail=result.detail)
        return Redirect("/ui/memory", status_code=303)

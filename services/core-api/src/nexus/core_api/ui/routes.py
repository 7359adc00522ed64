"""The UI's router: every page under /ui, the CSRF check on every form, refusals shown as pages."""

from typing import Any

from litestar import Router, get
from litestar.exceptions import HTTPException, ValidationException
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from nexus.core_api.ui.access import login, login_form, logout, ui_error
from nexus.core_api.ui.agents import AgentPages, MemoryPages, SkillPages
from nexus.core_api.ui.auth import UiSessionAuth, csrf_guard
from nexus.core_api.errors import document_problems
from nexus.core_api.ui.decide import AdminPages, ApprovalPages, GoalPages
from nexus.core_api.ui.links import link_form, mint_login_link, use_link
from nexus.core_api.ui.render import HERE
from nexus.core_api.ui.timing import ServerTimingMiddleware
from nexus.core_api.ui.work import BoardPages, RunPages, TaskPages


@get("/", include_in_schema=False)
async def home() -> Redirect:
    return Redirect("/ui/board", status_code=303)


def ui_routers() -> list[Any]:
    pages = Router(
        path="/ui",
        route_handlers=[
            home,
            login_form,
            login,
            logout,
            link_form,
            use_link,
            AgentPages,
            SkillPages,
            MemoryPages,
            BoardPages,
            TaskPages,
            RunPages,
            ApprovalPages,
            GoalPages,
            AdminPages,
        ],
        middleware=[ServerTimingMiddleware(), UiSessionAuth],
        guards=[csrf_guard],
        exception_handlers={HTTPException: ui_error, ValidationException: ui_error},
        include_in_schema=False,
    )
    static = create_static_files_router(
        path="/ui/static", directories=[HERE / "static"], include_in_schema=False, cache_control=None
    )
    return [pages, static, *document_problems([mint_login_link])]  # the link is minted through the API, with a key

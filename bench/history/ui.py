"""The web UI's pages in the history benchmark: each page a signed-in admin opens, timed like the
API's reads (client-side, so an upper bound on the server's render time)."""

import re

import httpx

_CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


async def sign_in(base_url: str, key: str) -> httpx.AsyncClient:
    ui = httpx.AsyncClient(base_url=base_url, timeout=120)
    token = _CSRF.search((await ui.get("/ui/login")).text).group(1)  # type: ignore[union-attr]  # the login page always carries the token
    r = await ui.post("/ui/login", data={"_csrf": token, "key": key})
    if r.status_code != 303:
        raise RuntimeError(f"UI sign-in refused: {r.status_code} {r.text[:300]}")
    return ui


async def _page(ui: httpx.AsyncClient, path: str) -> None:
    r = await ui.get(path)
    r.raise_for_status()


def ui_ops(side_ui) -> dict:
    """name → op(side, i); `side_ui(side)` gives the side's signed-in client."""
    return {
        # the API read the runs page makes, on its own: the page's cost beyond it is the UI's
        "api_runs_page_of_25": lambda s, i: _page(s.api, "/v1/runs?limit=25"),
        "ui_runs_page": lambda s, i: _page(side_ui(s), "/ui/runs"),
        "ui_runs_page_status_succeeded": lambda s, i: _page(side_ui(s), "/ui/runs?status=succeeded"),
        "ui_run_page": lambda s, i: _page(side_ui(s), f"/ui/runs/{s.rnd.choice(s.run_ids)}"),
        "ui_task_page": lambda s, i: _page(side_ui(s), f"/ui/tasks/{s.task_id}"),
        "ui_audit_page": lambda s, i: _page(side_ui(s), "/ui/admin/audit"),
        "ui_agents_page": lambda s, i: _page(side_ui(s), "/ui/agents"),
    }

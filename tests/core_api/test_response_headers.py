"""Every answer — a page, a form's redirect, an error page, the router's own 404, JSON, a created key —
refuses to be framed by another site, sniffed or cached, and sends no Referer; the UI's pages run only
the scripts they serve themselves."""

import httpx
import pytest
from litestar.testing import AsyncTestClient

from nexus.core_api.headers import UI_POLICY
from tests.core_api.test_ui import jar, sign_in

pytestmark = pytest.mark.infra


def assert_locked(r: httpx.Response, *, ui: bool, stored: bool = False) -> None:
    h = r.headers
    where = f"{r.request.method} {r.request.url.path} ({r.status_code})"
    assert h.get("x-frame-options") == "DENY", where
    assert h.get("x-content-type-options") == "nosniff", where
    assert h.get("referrer-policy") == "no-referrer", where
    assert h.get_list("content-security-policy") == [UI_POLICY if ui else "frame-ancestors 'none'"], where
    if not stored:
        assert h.get("cache-control") == "no-store", where


async def test_every_kind_of_answer_carries_the_headers(client: AsyncTestClient) -> None:
    r = await client.post("/v1/api-keys", json={"name": "shown-once", "role": "viewer"})
    assert r.status_code == 201 and r.json()["key"]
    assert_locked(r, ui=False)  # the one answer holding a key: never kept by a cache
    for path in ("/v1/agents", "/v1/agents/zz_missing", "/v1/no-such-route", "/healthz", "/schema/openapi.json"):
        assert_locked(await client.get(path), ui=False)
    assert_locked(await client.post("/v1/agents", json={"name": ""}), ui=False)  # a 4xx problem

    session = await sign_in(client, client.headers["authorization"].removeprefix("Bearer "))
    with jar(client, session) as c:
        for path in ("/ui/board", "/ui/runs/zz_missing", "/ui/no-such-page"):
            assert_locked(await c.get(path), ui=True)
        assert_locked(await c.post("/ui/logout"), ui=True)  # refused without its CSRF token: a 403 page
        r = await c.get("/ui/static/ui.css")
        assert r.status_code == 200
        assert_locked(r, ui=True, stored=True)  # static files may be cached
        assert r.headers.get("cache-control") != "no-store"
    with jar(client, httpx.Cookies()) as c:
        r = await c.get("/ui/runs")
        assert r.status_code == 303
        assert_locked(r, ui=True)
        assert_locked(await c.get("/ui/login"), ui=True)


async def test_no_page_needs_an_inline_script(client: AsyncTestClient) -> None:
    """The policy allows no inline script: a page that relied on one would stop working."""
    session = await sign_in(client, client.headers["authorization"].removeprefix("Bearer "))
    with jar(client, session) as c:
        for path in ("/ui/board", "/ui/runs", "/ui/agents", "/ui/runs/zz_missing", "/ui/login"):
            html = (await c.get(path)).text.lower()
            assert "javascript:" not in html and " onclick=" not in html and " hx-on" not in html, path
            assert html.count("<script") == html.count("<script src="), path

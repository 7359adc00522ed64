"""Every address the UI sends a browser to after signing in stays on this site, under /ui/: a `next`
pointing elsewhere (another host, a scheme, a header break) is replaced by the board."""

import httpx
import pytest
from litestar.testing import AsyncTestClient

from tests.core_api.test_ui import csrf_of, jar

pytestmark = pytest.mark.infra

ELSEWHERE = [
    "https://evil.example/ui/",
    "//evil.example/ui/",
    "/\\evil.example",
    "javascript:alert(1)//ui/",
    "ui/board",
    "/uix/",
    "",
]


async def test_a_next_address_elsewhere_lands_on_the_board(client: AsyncTestClient, settings) -> None:
    for target in ELSEWHERE:
        with jar(client, httpx.Cookies()) as c:
            r = await c.get("/ui/login", params={"next": target})
            assert 'name="next" value="/ui/board"' in r.text, target
            r = await c.post("/ui/login", data={"_csrf": csrf_of(r.text), "key": settings.admin_key, "next": target})
            assert r.status_code == 303 and r.headers["location"] == "/ui/board", (target, r.headers)


async def test_a_next_under_ui_is_kept_and_a_header_break_is_encoded(client: AsyncTestClient, settings) -> None:
    with jar(client, httpx.Cookies()) as c:
        r = await c.get("/ui/login")
        data = {"_csrf": csrf_of(r.text), "key": settings.admin_key, "next": "/ui/runs\r\nSet-Cookie: a=b"}
        r = await c.post("/ui/login", data=data)
        assert r.status_code == 303 and r.headers["location"] == "/ui/runs%0D%0ASet-Cookie:%20a=b"
        assert "a=b" not in str(r.headers.get_list("set-cookie"))


async def test_the_sign_in_redirect_keeps_the_page_as_one_value(client: AsyncTestClient) -> None:
    """A page's path holding `&next=` is carried whole: it cannot add a `next` of its own choosing."""
    with jar(client, httpx.Cookies()) as c:
        r = await c.get("/ui/runs/a%26next=elsewhere")
        assert r.status_code == 303
        location = httpx.URL(r.headers["location"])
        assert location.path == "/ui/login" and location.params.get_list("next") == ["/ui/runs/a&next=elsewhere"]

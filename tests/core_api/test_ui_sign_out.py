"""Signing out of a session a login link made revokes that session's own key: a copy of the cookie
kept elsewhere (a shared machine, a stolen backup) signs nobody in afterwards. A session made by
pasting a key clears its cookie only: the key is its holder's, still theirs to use."""

import httpx
import pytest
from litestar.testing import AsyncTestClient

from tests.core_api.conftest import new_key
from tests.core_api.test_ui import csrf_of, csrf_on, jar, sign_in

pytestmark = pytest.mark.infra


async def link_session(client: AsyncTestClient) -> httpx.Cookies:
    link = (await client.post("/v1/ui/login-links", json={"name": "carol", "role": "lead"})).json()["path"]
    with jar(client, httpx.Cookies()) as c:
        r = await c.get(link)
        r = await c.post("/ui/login/link", data={"_csrf": csrf_of(r.text), "t": link.split("t=", 1)[1]})
        assert r.status_code == 303, r.text
        return c.cookies


async def test_a_copied_cookie_of_a_link_session_dies_with_its_sign_out(client: AsyncTestClient) -> None:
    cookies = await link_session(client)
    copied = httpx.Cookies(cookies)
    with jar(client, cookies) as c:
        r = await c.post("/ui/logout", data={"_csrf": await csrf_on(c, "/ui/approvals")})
        assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    with jar(client, copied) as c:
        assert (await c.get("/ui/approvals")).status_code == 303  # to the sign-in: the key is revoked
    audit = (await client.get("/v1/audit", params={"action": "api_key.revoke"})).json()["items"]
    assert any(e["actor_name"] == "carol-ui" for e in audit), audit


async def test_signing_out_of_a_pasted_key_leaves_the_key_working(client: AsyncTestClient) -> None:
    key = await new_key(client, "viewer")
    with jar(client, await sign_in(client, key)) as c:
        assert (await c.post("/ui/logout", data={"_csrf": await csrf_on(c, "/ui/approvals")})).status_code == 303
    assert (await client.get("/v1/agents", headers={"Authorization": f"Bearer {key}"})).status_code == 200

"""A `?wait_s=` request whose key is revoked while it waits answers 401, not what the wait found: a
revoked key reads nothing more, however long it asked to wait (its event streams end the same way,
tests/core_api/test_stream_hold.py). Served by granian, so the wait and the revocation run at once."""

import asyncio

import httpx
import pytest

from tests.core_api.conftest import assert_problem, bearer, new_key, new_run

pytestmark = pytest.mark.infra


async def key_id_of(http: httpx.AsyncClient, raw: str) -> str:
    keys = (await http.get("/v1/api-keys", params={"limit": 200})).json()["items"]
    return next(k["id"] for k in keys if raw.startswith(k["prefix"]))


async def test_a_wait_whose_key_is_revoked_meanwhile_answers_401(http: httpx.AsyncClient) -> None:
    run = await new_run(http)  # queued, and no worker here: it does not end while the request waits
    viewer = await new_key(http, "viewer")
    key_id = await key_id_of(http, viewer)
    wait = asyncio.create_task(http.get(f"/v1/runs/{run['id']}", params={"wait_s": 6}, headers=bearer(viewer)))
    await asyncio.sleep(2)  # the request is waiting by now (if not, it is refused at once: 401 all the same)
    assert (await http.delete(f"/v1/api-keys/{key_id}")).status_code == 204
    body = assert_problem(await wait, 401)
    assert "revoked" in body["detail"] and run["id"] not in str(body)


async def test_a_wait_whose_key_holds_answers_the_run(http: httpx.AsyncClient) -> None:
    run = await new_run(http)
    viewer = await new_key(http, "viewer")
    r = await http.get(f"/v1/runs/{run['id']}", params={"wait_s": 0.2}, headers=bearer(viewer))
    assert r.status_code == 200 and r.json()["id"] == run["id"]

"""Every list of the OpenAPI document (each operation with a `cursor` query parameter) takes only the
cursors it issued: garbage, a bare id, a cursor of another list or of the same list under other filters
is a 422 naming `cursor`, never an empty or a wrong page (200); a page size out of range names `limit`."""

import uuid
from typing import Any

import pytest

from tests.core_api.conftest import assert_problem, new_agent

pytestmark = pytest.mark.infra


async def _lists(client) -> list[str]:
    schema = (await client.get("/schema/openapi.json")).json()
    lists = [
        path
        for path, item in schema["paths"].items()
        if any(p["name"] == "cursor" and p["in"] == "query" for p in item.get("get", {}).get("parameters", []))
    ]
    assert len(lists) >= 16, lists
    return lists


async def _parents(client) -> dict[str, str]:
    """A real parent for each list under one, so the request reaches its cursor."""
    agent = await new_agent(client)
    skill = (await client.post("/v1/skills", json={"name": f"s-{uuid.uuid4().hex[:6]}", "content": "x"})).json()
    goal = (await client.post("/v1/goals", json={"title": f"g-{uuid.uuid4().hex[:6]}"})).json()
    return {"agent_id": agent["id"], "skill_id": skill["id"], "goal_id": goal["id"]}


async def _issued(client, **params: Any) -> str:
    """A cursor the audit list issued (one entry per page: the parents' creations made several)."""
    page = (await client.get("/v1/audit", params={"limit": 1, **params})).json()
    assert page["next_cursor"], page
    return page["next_cursor"]


async def test_a_cursor_no_list_issued_is_refused_by_name_on_every_list(client) -> None:
    parents = await _parents(client)
    audit_cursor = await _issued(client)
    bare_id = audit_cursor.rpartition(".")[0]
    cursors = {
        "garbage": "garbage",
        "bare id": bare_id,
        "ulid": "01J0000000000000000000000Z",
        "tampered digest": audit_cursor[:-2] + ("AA" if not audit_cursor.endswith("AA") else "BB"),
        "other id, same digest": "aud_01J0000000000000000000000Z." + audit_cursor.rpartition(".")[2],
        "dot only": ".",
    }
    failures = []
    for path in await _lists(client):
        url = path.format(**parents)
        tried = {**cursors, **({"another list's": audit_cursor} if path != "/v1/audit" else {})}
        for name, cursor in tried.items():
            r = await client.get(url, params={"cursor": cursor})
            body = r.json()
            named = [e.get("field") for e in body.get("errors") or []] if r.status_code == 422 else []
            if named != ["cursor"]:
                failures.append(f"{url} cursor={name}: {r.status_code} {r.text[:200]}")
        for limit in ("0", "-1", "501", "ten"):
            r = await client.get(url, params={"limit": limit})
            if r.status_code != 422 or "limit" not in r.text:
                failures.append(f"{url} limit={limit}: {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)


async def test_a_cursor_serves_only_the_list_and_filters_that_issued_it(client) -> None:
    for _ in range(2):
        await client.post("/v1/goals", json={"title": f"g-{uuid.uuid4().hex[:6]}"})
    filtered = await _issued(client, action="goal.*")
    # The same list under other filters, and an issued cursor of one list under its own filters, which works.
    assert_problem(await client.get("/v1/audit", params={"cursor": filtered}), 422, "cursor")
    assert_problem(await client.get("/v1/audit", params={"cursor": filtered, "action": "agent.*"}), 422, "cursor")
    r = await client.get("/v1/audit", params={"cursor": filtered, "action": "goal.*", "limit": 1})
    assert r.status_code == 200, r.text
    unfiltered = await _issued(client)
    nxt = (await client.get("/v1/audit", params={"cursor": unfiltered, "limit": 1})).json()
    assert nxt["items"] and nxt["items"][0]["id"] < unfiltered.rpartition(".")[0]

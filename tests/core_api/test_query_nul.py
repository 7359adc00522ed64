"""A value the database cannot hold (a NUL character) is the caller's error, named, never a 500: in a
query, in a path, in a body's string or key."""

import pytest

from tests.core_api.conftest import assert_problem


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/board", {"goal_id": "g\x00"}, "goal_id"),
        ("/v1/board", {"assignee": "a\x00b"}, "assignee"),
        ("/v1/board", {"repository": "\x00"}, "repository"),
        ("/v1/runs", {"status": "failed\x00"}, "status"),
        ("/v1/tasks", {"goal_id": "\x00"}, "goal_id"),
    ],
)
async def test_a_nul_in_a_query_value_is_refused_by_name(client, path: str, params: dict, field: str) -> None:
    assert_problem(await client.get(path, params=params), 422, field)


async def test_a_nul_in_a_path_value_is_refused_by_name(client) -> None:
    assert_problem(await client.get("/v1/runs/run_%00x"), 422, "run_id")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"title": "a\\u0000b"}', "title"),
        ('{"title": "t", "blocked_by": ["x", "\\u0000"]}', "blocked_by[1]"),
    ],
)
async def test_a_nul_in_a_body_string_is_refused_by_name(client, body: str, field: str) -> None:
    r = await client.post("/v1/tasks", content=body, headers={"content-type": "application/json"})
    assert_problem(r, 422, field)


async def test_an_escaped_backslash_before_u0000_is_text_not_a_nul(client) -> None:
    r = await client.post(
        "/v1/tasks", content='{"title": "C:\\\\u0000 is a path"}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["title"] == "C:\\u0000 is a path"


@pytest.mark.parametrize(
    ("body", "field"),
    [(b'{"args": {"id": "a\\u0000"}}', "args.id"), (b'{"args": {"id": 18446744073709551617}}', "args.id")],
)
async def test_a_chat_query_holding_what_no_store_can_keep_is_refused_by_name(body: bytes, field: str) -> None:
    """The gateway's queries over NATS are answered as HTTP is: refused naming the field, before any read."""
    from nexus.core_api.chat_queries.responder import answer

    reply = await answer("approval", body)
    assert reply["ok"] is False and f"`$.{field}`" in reply["error"], reply

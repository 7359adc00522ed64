"""Chat bindings over the API: admins bind chat users to identities with a role (lead, viewer)."""

import uuid

import pytest

from tests.core_api.conftest import assert_problem, bearer, new_key

pytestmark = pytest.mark.infra


def _uid() -> str:
    return str(uuid.uuid4().int % 10**12)


async def test_bind_rebind_list_unbind_and_bad_input(client) -> None:
    uid = _uid()
    r = await client.post("/v1/chat-bindings", json={"user_id": uid, "identity": "alice@example.com", "role": "viewer"})
    assert r.status_code == 201 and r.json()["id"] == f"telegram:{uid}", r.text
    r = await client.post("/v1/chat-bindings", json={"user_id": uid, "identity": "alice@example.com", "role": "lead"})
    assert r.status_code == 200 and r.json()["role"] == "lead", r.text
    assert (await client.get(f"/v1/chat-bindings/telegram:{uid}")).json()["role"] == "lead"
    assert any(
        b["user_id"] == uid for b in (await client.get("/v1/chat-bindings", params={"role": "lead"})).json()["items"]
    )
    assert_problem(
        await client.post("/v1/chat-bindings", json={"user_id": uid, "identity": "a", "role": "admin"}), 422, "role"
    )
    assert_problem(
        await client.post("/v1/chat-bindings", json={"user_id": "@alice", "identity": "a", "role": "lead"}),
        422,
        "user_id",
    )
    assert_problem(await client.post("/v1/chat-bindings", json={"user_id": uid, "role": "lead"}), 422, "identity")
    lead_key = await new_key(client, "lead")
    r = await client.post(
        "/v1/chat-bindings", json={"user_id": uid, "identity": "me", "role": "lead"}, headers=bearer(lead_key)
    )
    assert r.status_code == 403
    assert (await client.delete(f"/v1/chat-bindings/telegram:{uid}")).status_code == 204
    assert_problem(await client.delete(f"/v1/chat-bindings/telegram:{uid}"), 404)

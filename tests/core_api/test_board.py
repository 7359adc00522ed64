"""The internal board: columns from task status, ranks, refused moves, provider settings with
secret references, and signed webhooks (forged → 401, replay → ignored)."""

import hashlib
import hmac
import json
import uuid

import msgspec
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from nexus.events.bus import connect
from nexus.events.envelope import decode_raw
from nexus.events.payloads import BoardExternalChanged
from tests.core_api.conftest import assert_problem, new_key


def cards(board: dict, column: str) -> list[str]:
    return [c["task_id"] for c in next(col for col in board["columns"] if col["id"] == column)["cards"]]


async def test_columns_ranks_and_refused_moves(client):
    goal = (await client.post("/v1/goals", json={"title": f"g-{uuid.uuid4().hex[:6]}"})).json()
    ids = []
    for i in range(3):
        r = await client.post("/v1/tasks", json={"title": f"card {i}", "status": "backlog", "goal_id": goal["id"]})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    board = (await client.get("/v1/board", params={"goal_id": goal["id"]})).json()
    assert [c["id"] for c in board["columns"]] == [
        "backlog",
        "ready",
        "running",
        "waiting_approval",
        "in_review",
        "done",
        "failed_cancelled",
    ]
    assert cards(board, "backlog") == ids

    r = await client.post(f"/v1/board/cards/{ids[2]}/move", json={"direction": "top"})
    assert r.status_code == 200, r.text
    r = await client.post(f"/v1/board/cards/{ids[0]}/move", json={"direction": "down"})
    assert r.status_code == 200, r.text
    assert cards((await client.get("/v1/board", params={"goal_id": goal["id"]})).json(), "backlog") == [
        ids[2],
        ids[1],
        ids[0],
    ]

    # the state machine refuses backlog → done, and names the rule
    r = assert_problem(await client.post(f"/v1/board/cards/{ids[1]}/move", json={"column": "done"}), 409)
    assert "backlog to done" in r["detail"]
    assert_problem(await client.post(f"/v1/board/cards/{ids[1]}/move", json={"column": "running"}), 409, "column")
    r = await client.post(f"/v1/board/cards/{ids[1]}/move", json={"column": "failed_cancelled"})
    assert r.status_code == 200 and r.json()["column"] == "failed_cancelled", r.text
    board = (await client.get("/v1/board", params={"goal_id": goal["id"]})).json()
    assert cards(board, "failed_cancelled") == [ids[1]] and ids[1] not in cards(board, "backlog")


async def test_final_columns_show_their_newest_cards_and_say_there_are_more(client):
    goal = (await client.post("/v1/goals", json={"title": f"g-{uuid.uuid4().hex[:6]}"})).json()
    ids = []
    for i in range(3):
        task = (
            await client.post("/v1/tasks", json={"title": f"old {i}", "status": "backlog", "goal_id": goal["id"]})
        ).json()
        r = await client.post(f"/v1/board/cards/{task['id']}/move", json={"column": "failed_cancelled"})
        assert r.status_code == 200, r.text
        ids.append(task["id"])
    open_one = (
        await client.post("/v1/tasks", json={"title": "open", "status": "backlog", "goal_id": goal["id"]})
    ).json()

    def column(board: dict, name: str) -> dict:
        return next(col for col in board["columns"] if col["id"] == name)

    board = (await client.get("/v1/board", params={"goal_id": goal["id"], "final_limit": 2})).json()
    assert sorted(cards(board, "failed_cancelled")) == sorted(ids[1:]) and column(board, "failed_cancelled")["more"]
    assert cards(board, "backlog") == [open_one["id"]] and not column(board, "backlog")["more"]
    board = (await client.get("/v1/board", params={"goal_id": goal["id"], "final_limit": 3})).json()
    assert sorted(cards(board, "failed_cancelled")) == sorted(ids) and not column(board, "failed_cancelled")["more"]
    assert_problem(await client.get("/v1/board", params={"final_limit": 0}), 422, "final_limit")


async def test_board_filters_and_bad_input(client):
    assert_problem(await client.get("/v1/board", params={"assignee": "nobody-here"}), 422, "assignee")
    assert_problem(await client.post("/v1/board/cards/task_missing/move", json={"column": "ready"}), 404)
    r = await client.post("/v1/tasks", json={"title": "x", "status": "backlog"})
    assert_problem(
        await client.post(f"/v1/board/cards/{r.json()['id']}/move", json={"column": "sideways"}), 422, "column"
    )


async def test_provider_settings_hold_secret_references_only(client):
    body = {
        "provider": "plane",
        "plane": {
            "base_url": "http://plane.internal",
            "workspace_slug": "acme",
            "project_id": "p1",
            "api_key_secret": "PLANE_KEY",
            "webhook_secret": "PLANE_HOOK",
        },
    }
    r = await client.put("/v1/board/providers/default", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["plane"]["api_key_secret"] == "PLANE_KEY"
    # a value where a reference belongs is refused
    bad = {**body, "plane": {**body["plane"], "api_key_secret": "pl_live 3f9a/+=="}}
    assert_problem(await client.put("/v1/board/providers/default", json=bad), 422, "plane.api_key_secret")
    assert_problem(await client.put("/v1/board/providers/default", json={"provider": "jira"}), 422, "jira")
    viewer = await new_key(client, "viewer")
    r = await client.get("/v1/board/providers", headers={"Authorization": f"Bearer {viewer}"})
    assert r.status_code == 403


@pytest.fixture
def hook_secret(app, client) -> str:
    value = "whsec_" + uuid.uuid4().hex
    app.state.ctx.secrets.environ = {"NEXUS_SECRET_PLANE_HOOK": value}
    return value


def _signed(secret: str, payload: dict) -> tuple[bytes, dict]:
    raw = json.dumps(payload).encode()
    return raw, {
        "Content-Type": "application/json",
        "X-Plane-Delivery": str(uuid.uuid4()),
        "X-Plane-Event": payload["event"],
        "X-Plane-Signature": hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest(),
    }


async def test_plane_webhook_forged_refused_replay_ignored(app, client, hook_secret, nats_url, nats_creds):
    await client.put(
        "/v1/board/providers/default",
        json={
            "provider": "plane",
            "plane": {
                "base_url": "http://plane.internal",
                "workspace_slug": "acme",
                "project_id": "p1",
                "api_key_secret": "PLANE_KEY",
                "webhook_secret": "PLANE_HOOK",
            },
        },
    )
    nc = await connect(nats_url, "test-board", creds=nats_creds)  # the test's own user reads the stream
    js = nc.jetstream()
    item = f"item-{uuid.uuid4().hex}"
    sub = await js.pull_subscribe(
        "nexus.evt.board.external_changed",
        stream="NEXUS_EVENTS",
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
    )
    raw, headers = _signed(
        hook_secret,
        {
            "event": "issue",
            "action": "update",
            "data": {"id": item},
            "activity": {"field": "state", "actor": {"display_name": "Ana"}},
        },
    )
    anon = {"Authorization": ""}
    forged = {**headers, "X-Plane-Signature": hmac.new(b"guess", raw, hashlib.sha256).hexdigest()}
    assert_problem(await client.post("/v1/webhooks/plane", content=raw, headers={**anon, **forged}), 401)
    unsigned = {k: v for k, v in headers.items() if k != "X-Plane-Signature"}
    assert_problem(await client.post("/v1/webhooks/plane", content=raw, headers={**anon, **unsigned}), 401)
    tampered = raw.replace(item.encode(), b"item-other")
    assert_problem(await client.post("/v1/webhooks/plane", content=tampered, headers={**anon, **headers}), 401)

    r = await client.post("/v1/webhooks/plane", content=raw, headers={**anon, **headers})
    assert r.status_code == 200 and r.json()["accepted"] is True, r.text
    r = await client.post("/v1/webhooks/plane", content=raw, headers={**anon, **headers})
    assert r.status_code == 200 and r.json() == {"accepted": False, "duplicate": True}

    msgs = await sub.fetch(10, timeout=2)
    ours = [msgspec.json.decode(decode_raw(m.data).data, type=BoardExternalChanged) for m in msgs]
    ours = [c for c in ours if c.item_id == item]
    assert len(ours) == 1 and ours[0].actor == "Ana" and ours[0].provider == "plane"
    await sub.unsubscribe()
    await nc.close()


async def test_jira_webhook_needs_the_shared_secret(app, client):
    value = "jira_" + uuid.uuid4().hex
    app.state.ctx.secrets.environ = {"NEXUS_SECRET_JIRA_HOOK": value}
    r = await client.put(
        "/v1/board/providers/default",
        json={
            "provider": "jira",
            "jira": {
                "base_url": "https://acme.atlassian.net",
                "project_key": "NEX",
                "email": "bot@acme.org",
                "api_token_secret": "JIRA_TOKEN",
                "webhook_secret": "JIRA_HOOK",
            },
        },
    )
    assert r.status_code == 200, r.text
    raw = json.dumps(
        {"webhookEvent": "jira:issue_updated", "issue": {"key": "NEX-1"}, "user": {"displayName": "Ana"}}
    ).encode()
    good = "sha256=" + hmac.new(value.encode(), raw, hashlib.sha256).hexdigest()
    hook = uuid.uuid4().hex
    anon = {"Authorization": "", "Content-Type": "application/json", "X-Atlassian-Webhook-Identifier": hook}
    assert_problem(await client.post("/v1/webhooks/jira", content=raw, headers=anon), 401)
    bad = "sha256=" + hmac.new(b"guess", raw, hashlib.sha256).hexdigest()
    assert_problem(await client.post("/v1/webhooks/jira", content=raw, headers={**anon, "X-Hub-Signature": bad}), 401)
    r = await client.post("/v1/webhooks/jira", content=raw, headers={**anon, "X-Hub-Signature": good})
    assert r.status_code == 200 and r.json()["accepted"] is True, r.text
    r = await client.post("/v1/webhooks/jira", content=raw, headers={**anon, "X-Hub-Signature": good})
    assert r.json() == {"accepted": False, "duplicate": True}

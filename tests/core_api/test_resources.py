"""Sessions, approvals, api keys, audit; and the rules every resource shares: validation naming the
field, 413 for oversized bodies, cursor pagination, revision pinning, task dependencies."""

import uuid

import pytest

from nexus.core_api.approvals.service import expire_due, on_requested
from nexus.core_api.workflow.engine import plan_children
from nexus.core_api.sessions.service import on_change, on_opened
from nexus.domain.ids import new_id
from nexus.domain.sessions import NoteChange
from nexus.events.payloads import ApprovalRequested, ChildPlan, PlanChildren, SessionChanged, SessionOpened
from tests.core_api.conftest import assert_problem, bearer, in_app, new_agent, new_key, new_run

pytestmark = pytest.mark.infra


async def test_session_tree_of_a_meta_run(client, app) -> None:
    meta = await new_agent(client)
    goal = (await client.post("/v1/goals", json={"title": "Split me", "meta_agent": meta["id"]})).json()
    run = (await client.get(f"/v1/runs/{goal['meta_run_id']}")).json()
    root = run["session_id"]
    # Before the runner reports in, the run's session is a pending node.
    tree = (await client.get(f"/v1/runs/{run['id']}/sessions/tree")).json()
    assert tree["sessionId"] == root and tree["status"] == "pending" and tree["children"] == []

    await in_app(client, on_opened, run["id"], SessionOpened(session_id=root, project_path="/w", backend="scripted"))
    note = NoteChange(timestamp="2026-01-01T00:00:00Z", seq=1, message="plan: two parts")
    await in_app(client, on_change, run["id"], SessionChanged(session_id=root, change=note))
    kids = [new_id("ses"), new_id("ses")]
    await in_app(
        client,
        plan_children,
        app.state.ctx,
        PlanChildren(
            run_id=run["id"],
            session_id=root,
            children=[ChildPlan(session_id=kids[0], title="part one"), ChildPlan(session_id=kids[1], title="part two")],
        ),
    )
    child_run = (
        await client.get(
            "/v1/runs",
            params={
                "task_id": (await client.get("/v1/tasks", params={"goal_id": goal["id"]})).json()["items"][0]["id"]
            },
        )
    ).json()["items"][0]
    await in_app(
        client,
        on_opened,
        child_run["id"],
        SessionOpened(session_id=child_run["session_id"], project_path="/w", parent_session_id=root),
    )

    r = await client.get(f"/v1/runs/{run['id']}/sessions/tree")
    assert r.status_code == 200, r.text
    tree = r.json()
    assert set(tree) >= {
        "sessionId",
        "parentSessionId",
        "backend",
        "status",
        "notes",
        "changes",
        "createdAt",
        "updatedAt",
        "children",
    }
    assert (
        tree["parentSessionId"] is None
        and tree["notes"] == ["plan: two parts"]
        and tree["changes"][0]["type"] == "note"
    )
    children = {c["sessionId"]: c for c in tree["children"]}
    assert set(children) == set(kids) and all(c["parentSessionId"] == root for c in children.values())
    assert children[child_run["session_id"]]["status"] == "active"
    assert [c["status"] for s, c in children.items() if s != child_run["session_id"]] == ["pending"]

    listed = (await client.get("/v1/sessions", params={"parent_session_id": root})).json()["items"]
    assert [s["sessionId"] for s in listed] == [child_run["session_id"]]
    assert (await client.get(f"/v1/sessions/{root}")).json()["runId"] == run["id"]
    assert [
        s["sessionId"] for s in (await client.get("/v1/sessions", params={"run_id": run["id"]})).json()["items"]
    ] == [root]
    assert_problem(await client.get("/v1/sessions/ses_missing"), 404)
    assert_problem(await client.get("/v1/runs/run_missing/sessions/tree"), 404)


async def test_approvals_list_approve_reject(client, app) -> None:
    run = await new_run(client)
    ids = [f"apr_{uuid.uuid4().hex}" for _ in range(3)]
    for i, aid in enumerate(ids):
        await in_app(
            client,
            on_requested,
            app.state.ctx,
            ApprovalRequested(approval_id=aid, run_id=run["id"], action=f"command:{i}", detail="rm -rf build"),
        )
    pending = (await client.get("/v1/approvals", params={"run_id": run["id"]})).json()["items"]
    assert {a["id"] for a in pending} == set(ids) and all(a["status"] == "pending" for a in pending)
    assert [
        a["id"]
        for a in (await client.get("/v1/approvals", params={"run_id": run["id"], "action": "command:1"})).json()[
            "items"
        ]
    ] == [ids[1]]

    lead = await new_key(client, "lead")
    r = await client.post(f"/v1/approvals/{ids[0]}/approve", json={"reason": "fine"}, headers=bearer(lead))
    assert r.status_code == 200 and r.json()["status"] == "approved" and r.json()["reason"] == "fine", r.text
    assert_problem(await client.post(f"/v1/approvals/{ids[1]}/reject", json={}), 422, "reason")
    assert_problem(await client.post(f"/v1/approvals/{ids[1]}/reject", json={"reason": "x", "why": 1}), 422, "why")
    r = await client.post(f"/v1/approvals/{ids[1]}/reject", json={"reason": "too risky"})
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert_problem(await client.post(f"/v1/approvals/{ids[0]}/reject", json={"reason": "again"}), 409, "decision")
    assert_problem(await client.post("/v1/approvals/apr_missing/approve"), 404)

    still = (await client.get("/v1/approvals", params={"run_id": run["id"]})).json()["items"]
    assert [a["id"] for a in still] == [ids[2]]
    every = (await client.get("/v1/approvals", params={"run_id": run["id"], "status": "all"})).json()["items"]
    assert {a["status"] for a in every} == {"approved", "rejected", "pending"}
    assert_problem(await client.get("/v1/approvals", params={"status": "maybe"}), 422, "status")
    assert (await client.get(f"/v1/approvals/{ids[1]}")).json()["decided_by"]


async def test_an_approval_whose_run_ended_is_closed_not_left_pending(client, app) -> None:
    """A run cancelled while it waited for a decision left its approval pending for good: in the list, the
    pending count and the chat, and `approve` answered "approved" for a run that no longer existed to go on."""
    run = await new_run(client)
    asked, forgotten = (f"apr_{uuid.uuid4().hex}" for _ in range(2))
    for aid in (asked, forgotten):
        request = ApprovalRequested(approval_id=aid, run_id=run["id"], action="merge", detail="merge it")
        await in_app(client, on_requested, app.state.ctx, request)
    r = await client.post(f"/v1/runs/{run['id']}/cancel", json={"reason": "not needed"})
    assert r.status_code in (201, 202) and r.json()["status"] == "cancelled", r.text

    body = assert_problem(await client.post(f"/v1/approvals/{asked}/approve", json={"reason": "fine"}), 409, "decision")
    assert body["detail"] == "approval is expired: its run ended (cancelled) before a decision"

    assert await in_app(client, expire_due, app.state.ctx) >= 1  # the sweep closes the one nobody decides
    closed = (await client.get(f"/v1/approvals/{forgotten}")).json()
    assert closed["status"] == "expired" and closed["decided_by"] == "system", closed
    assert (await client.get("/v1/approvals", params={"run_id": run["id"]})).json()["items"] == []


async def test_api_keys_shown_once_listed_without_hash_and_revoked(client) -> None:
    r = await client.post("/v1/api-keys", json={"name": "ci-viewer", "role": "viewer"})
    assert r.status_code == 201, r.text
    created = r.json()
    raw = created["key"]
    assert raw.startswith("nxk_") and created["prefix"] == raw[:10] and "key_hash" not in created
    assert (await client.get("/v1/agents", headers=bearer(raw))).status_code == 200
    assert (await client.post("/v1/goals", json={"title": "no"}, headers=bearer(raw))).status_code == 403

    listed = (await client.get("/v1/api-keys", params={"role": "viewer"})).json()["items"]
    assert created["id"] in {k["id"] for k in listed}
    text = (await client.get("/v1/api-keys")).text + (await client.get(f"/v1/api-keys/{created['id']}")).text
    assert raw not in text and "hash" not in text
    assert_problem(await client.post("/v1/api-keys", json={"name": "r", "role": "runner"}), 422, "role")
    assert_problem(await client.post("/v1/api-keys", json={"name": "Bad Name!", "role": "viewer"}), 422, "name")

    assert (await client.delete(f"/v1/api-keys/{created['id']}")).status_code == 204
    assert_problem(await client.get("/v1/agents", headers=bearer(raw)), 401)
    assert (await client.get(f"/v1/api-keys/{created['id']}")).json()["revoked"] is True
    assert_problem(await client.delete("/v1/api-keys/key_bootstrap_admin"), 409)


async def test_runner_token_reads_only_its_own_run(client) -> None:
    run_a, run_b = await new_run(client), await new_run(client)
    r = await client.post(f"/v1/runs/{run_a['id']}/token")
    assert r.status_code == 201, r.text
    token = r.json()
    assert token["role"] == "runner" and token["run_id"] == run_a["id"]
    h = bearer(token["key"])
    assert (await client.get(f"/v1/runs/{run_a['id']}", headers=h)).status_code == 200
    assert_problem(await client.get(f"/v1/runs/{run_b['id']}", headers=h), 403)
    assert_problem(await client.get("/v1/runs", headers=h), 403)
    assert_problem(await client.post(f"/v1/runs/{run_a['id']}/token", headers=h), 403)
    assert_problem(await client.post("/v1/runs/run_missing/token"), 404)


async def test_every_mutation_is_audited(client) -> None:
    agent = await new_agent(client)
    goal = (await client.post("/v1/goals", json={"title": "audited"})).json()
    mem = (await client.post("/v1/memory", json={"scope": "global", "content": "audited fact"})).json()
    await client.patch(f"/v1/memory/{mem['id']}", json={"tags": ["a"]})
    await client.delete(f"/v1/memory/{mem['id']}")
    key = (await client.post("/v1/api-keys", json={"name": "audited", "role": "lead"})).json()
    await client.delete(f"/v1/api-keys/{key['id']}")

    entries = (await client.get("/v1/audit", params={"limit": 200})).json()["items"]
    seen = {(e["action"], e["resource"]) for e in entries}
    for expected in [
        ("agent.create", f"agents/{agent['id']}"),
        ("goal.create", f"goals/{goal['id']}"),
        ("memory.create", f"memory/{mem['id']}"),
        ("memory.update", f"memory/{mem['id']}"),
        ("memory.delete", f"memory/{mem['id']}"),
        ("api_key.create", f"api-keys/{key['id']}"),
        ("api_key.revoke", f"api-keys/{key['id']}"),
    ]:
        assert expected in seen, expected
    assert entries == sorted(entries, key=lambda e: e["id"], reverse=True)  # newest first
    mine = (await client.get("/v1/audit", params={"resource": f"memory/{mem['id']}"})).json()["items"]
    assert [e["action"] for e in mine] == ["memory.delete", "memory.update", "memory.create"]
    assert (
        mine[0]["actor"] == "key_bootstrap_admin"
        and mine[0]["before_id"] == mem["id"]
        and mine[-1]["after_id"] == mem["id"]
    )
    assert {e["action"] for e in (await client.get("/v1/audit", params={"action": "api_key.*"})).json()["items"]} == {
        "api_key.create",
        "api_key.revoke",
    }
    viewer = await new_key(client, "viewer")
    assert_problem(await client.get("/v1/audit", headers=bearer(viewer)), 403)


async def test_validation_unknown_fields_and_oversized_bodies(client, settings) -> None:
    assert_problem(
        await client.post("/v1/agents", json={"name": "ok-name", "system_prompt": "x", "colour": 1}), 422, "colour"
    )
    assert_problem(await client.post("/v1/agents", json={"name": "ok-name"}), 422, "system_prompt")
    body = assert_problem(
        await client.post(
            "/v1/agents", json={"name": "ok-name", "system_prompt": "x", "llm": {"provider": "external"}}
        ),
        422,
        "llm",
    )
    assert "`command`" in body["detail"] + str(body["errors"]), body
    assert_problem(await client.post("/v1/tasks", json={"title": "t", "priority": 1000}), 422, "priority")
    assert_problem(await client.get("/v1/tasks", params={"limit": 0}), 422, "limit")
    assert_problem(await client.get("/v1/tasks", params={"status": "sleeping"}), 422, "status")
    r = await client.post(
        "/v1/memory",
        content=b'{"scope": "global", "content": "' + b"x" * settings.max_body_bytes + b'"}',
        headers={"content-type": "application/json"},
    )
    assert_problem(r, 413)
    assert_problem(
        await client.post("/v1/goals", content=b"{not json", headers={"content-type": "application/json"}), 400
    )


@pytest.mark.parametrize(
    ("part", "field"),
    [
        ({"tools": ["write_file", "write_flie"]}, "tools[1]"),
        ({"limits": {"max_steps": 0}}, "limits.max_steps"),
        ({"limits": {"max_tokens": -1}}, "limits.max_tokens"),
        ({"limits": {"wall_clock_s": -5}}, "limits.wall_clock_s"),
        ({"limits": {"max_cost_usd": -0.5}}, "limits.max_cost_usd"),
        ({"permissions": {"commands": {"timeout_s": 0}}}, "permissions.commands.timeout_s"),
        ({"permissions": {"commands": {"max_output_bytes": -10}}}, "permissions.commands.max_output_bytes"),
        ({"memory_policy": {"max_items": -3}}, "memory_policy.max_items"),
        ({"memory_policy": {"max_chars": -1}}, "memory_policy.max_chars"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_an_agent_that_cannot_work_as_written_is_refused_naming_the_field(client, part, field) -> None:
    """A tool named with a typo was stored and the agent silently went without it ("this agent may not use
    write_file" at run time); `wall_clock_s: -5` was stored and every run ended at its start ("wall-clock
    limit of -5s exceeded"). Both on create and on update."""
    body = {"name": f"caps-{uuid.uuid4().hex[:6]}", "system_prompt": "x", **part}
    assert_problem(await client.post("/v1/agents", json=body), 422, field)
    agent = await new_agent(client, name=body["name"])
    assert_problem(await client.put(f"/v1/agents/{agent['id']}", json=body), 422, field)
    assert (await client.get(f"/v1/agents/{agent['id']}")).json()["revision"] == 1


async def test_cursor_pagination_walks_every_page(client) -> None:
    tag = f"page-{uuid.uuid4().hex[:6]}"
    made = [
        (await client.post("/v1/memory", json={"scope": "global", "content": f"fact {i}", "tags": [tag]})).json()["id"]
        for i in range(7)
    ]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"tag": tag, "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/memory", params=params)).json()
        seen += [m["id"] for m in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 3 and seen == list(reversed(made))  # newest first, each item once


async def test_a_run_keeps_the_agent_revision_it_was_dispatched_with(client) -> None:
    agent = await new_agent(client, system_prompt="Version one.")
    run1 = await new_run(client, agent)
    spec = {**agent["spec"], "system_prompt": "Version two."}
    r = await client.put(f"/v1/agents/{agent['id']}", json=spec)
    assert r.status_code == 200 and r.json()["revision"] == 2, r.text
    run2 = await new_run(client, agent)

    run1 = (await client.get(f"/v1/runs/{run1['id']}")).json()
    assert (run1["agent_revision"], run1["config"]["system_prompt"]) == (1, "Version one.")
    assert (run2["agent_revision"], run2["config"]["system_prompt"]) == (2, "Version two.")
    old = (await client.get(f"/v1/agents/{agent['id']}/revisions/1")).json()
    assert old["spec"]["system_prompt"] == "Version one."


async def test_blocked_task_waits_until_its_blocker_is_done(client) -> None:
    agent = await new_agent(client)
    blocker = (await client.post("/v1/tasks", json={"title": "first", "assignee": agent["id"]})).json()
    assert blocker["status"] == "in_progress"
    blocked = (await client.post("/v1/tasks", json={"title": "second", "blocked_by": [blocker["id"]]})).json()
    assert blocked["status"] == "backlog"
    assert_problem(await client.post(f"/v1/tasks/{blocked['id']}/status", json={"status": "ready"}), 409, "status")
    assert_problem(
        await client.post("/v1/tasks", json={"title": "x", "blocked_by": ["task_missing"]}), 422, "blocked_by"
    )

    r = await client.post(f"/v1/tasks/{blocker['id']}/status", json={"status": "done"})
    assert r.status_code == 201 and r.json()["status"] == "done", r.text
    assert (await client.get(f"/v1/tasks/{blocked['id']}")).json()["status"] == "ready"

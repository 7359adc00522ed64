"""The board through the real services and the Plane double: an item created once across a crash
between the create and the link write, run progress moving it with a summary comment and commit
link, a Plane cancel cancelling the task, forged and replayed webhooks refused, external edits
reverted, and drift repaired."""

import asyncio
import html
import uuid
from pathlib import Path

import httpx
import pytest

from nexus.dev.doubles.plane import PlaneDouble
from tests.e2e.conftest import running_stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.infra]

SCRIPT = """
steps:
  - tool_calls:
      - name: write_file
        args: {path: "board.txt", content: "on the board\\n"}
  - tool_calls:
      - name: git_commit
        args: {message: "board: a file"}
  - say: "Wrote board.txt and committed it."
"""
HOOK_SECRET = "whsec_" + uuid.uuid4().hex


async def until(predicate, *, attempts: int = 600, every_s: float = 0.1):
    """Wait on a state the double or a process reaches; the bound is a count of polls."""
    for _ in range(attempts):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(every_s)
    raise AssertionError("the expected state was never reached")


def item_for(double: PlaneDouble, task_id: str) -> dict | None:
    items = double.by_external_id(task_id)
    assert len(items) <= 1, items  # never two items for one task
    return items[0] if items else None


async def post_hook(api_url: str, body: bytes, headers: dict) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as anon:
        return await anon.post("/v1/webhooks/plane", content=body, headers=headers)


async def test_board_projected_to_plane(tmp_path: Path, nats_url: str, mongo_url: str, bare_repo) -> None:
    plane = PlaneDouble()  # Plane's real limit: 60 requests a minute per key
    plane_url = plane.start()
    crash = tmp_path / "crash-after-create"
    crash.write_text("once")
    env = {
        "NEXUS_SECRET_PLANE_KEY": "plane_api_key",
        "NEXUS_SECRET_PLANE_HOOK": HOOK_SECRET,
        "NEXUS_CRASH_AFTER_CREATE_FILE": str(crash),
        "NEXUS_DRIFT_INTERVAL_S": "1",
        "NEXUS_ACK_WAIT_S": "3",
        "NEXUS_OUTAGE_BACKOFF_S": "0.5",
    }
    try:
        with running_stack(
            tmp_path, nats_url, mongo_url, env=env, services=["core-api", "worker", "board-sync"]
        ) as stack:
            async with httpx.AsyncClient(
                base_url=stack.api_url, timeout=30, headers={"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"}
            ) as api:
                await scenario(api, stack, plane, plane_url, crash, bare_repo)
    finally:
        plane.stop()


async def scenario(
    api: httpx.AsyncClient, stack, plane: PlaneDouble, plane_url: str, crash: Path, bare_repo: Path
) -> None:
    r = await api.put(
        "/v1/board/providers/default",
        json={
            "provider": "plane",
            "plane": {
                "base_url": plane_url,
                "workspace_slug": plane.workspace,
                "project_id": plane.project_id,
                "api_key_secret": "PLANE_KEY",
                "webhook_secret": "PLANE_HOOK",
            },
        },
    )
    assert r.status_code == 200, r.text
    assert "plane_api_key" not in r.text and HOOK_SECRET not in r.text
    r = await api.post(
        "/v1/agents",
        json={
            "name": "boarder",
            "system_prompt": "You write files.",
            "tools": ["write_file", "git_commit", "finish"],
            "permissions": {"can_commit": True},
            "llm": {"provider": "scripted", "script": SCRIPT},
        },
    )
    assert r.status_code == 201, r.text
    r = await api.post("/v1/repositories", json={"name": "boarded", "url": str(bare_repo), "default_branch": "main"})
    assert r.status_code == 201, r.text

    # 1. task created → board-sync creates the item and dies before writing the link; restarted,
    #    it finds the item by the task id instead of creating a second one.
    task = (
        await api.post(
            "/v1/tasks", json={"title": "Put it on the board", "assignee": "boarder", "repository": "boarded"}
        )
    ).json()
    board_sync = stack.procs["board-sync"]
    await until(lambda: board_sync.poll() is not None)
    assert board_sync.returncode == 70 and not crash.exists()
    assert plane.creates == 1
    stack.start_service("board-sync")

    # 2. run progress → the item reaches "completed", with the run's summary and commit in a comment
    done = await wait_for(api, f"/v1/tasks/{task['id']}", lambda t: t["status"] in ("done", "failed", "cancelled"))
    assert done["status"] == "done", done
    run = (await api.get(f"/v1/runs/{task['current_run_id']}")).json()
    assert run["commit_sha"], run
    item = await until(lambda: (i := item_for(plane, task["id"])) and plane.group_of(i) == "completed" and i)
    comments = await until(
        lambda: [
            html.unescape(c["comment_html"])
            for c in plane.comments.get(item["id"], [])
            if run["id"] in c["comment_html"]
        ]
    )
    assert run["commit_sha"][:12] in comments[0] and run["summary"] and run["summary"] in comments[0], (comments, run)
    await until(lambda: any(link["url"].endswith(f"/v1/runs/{run['id']}") for link in plane.links.get(item["id"], [])))
    assert plane.creates == 1 and len(plane.by_external_id(task["id"])) == 1

    # 3. the board shows the card done, with its run and cost
    board = (await api.get("/v1/board", params={"repository": "boarded"})).json()
    card = next(c for col in board["columns"] for c in col["cards"] if c["task_id"] == task["id"])
    assert card["column"] == "done" and card["run"]["status"] == "succeeded"

    # 4. a card moved to a cancelled state in Plane cancels the task, audited with provider and actor
    waiting = (
        await api.post("/v1/tasks", json={"title": "Maybe later", "status": "backlog", "repository": "boarded"})
    ).json()
    item2 = await until(lambda: item_for(plane, waiting["id"]))
    forged_body, forged = plane.webhook("not-the-secret", event="issue", action="update", data={"id": item2["id"]})
    r = await post_hook(stack.api_url, forged_body, forged)
    assert r.status_code == 401, r.text
    plane.edit(item2["id"], state=plane.state_id("cancelled"))
    body, headers = plane.webhook(
        HOOK_SECRET,
        event="issue",
        action="update",
        data={"id": item2["id"]},
        activity={"field": "state", "actor": {"display_name": "Ana"}},
    )
    r = await post_hook(stack.api_url, body, headers)
    assert r.status_code == 200 and r.json()["accepted"] is True, r.text
    await wait_for(api, f"/v1/tasks/{waiting['id']}", lambda t: t["status"] == "cancelled")
    audit = (await api.get("/v1/audit", params={"resource": f"tasks/{waiting['id']}"})).json()
    entries = audit.get("items", audit) if isinstance(audit, dict) else audit
    assert any(e["actor"] == "plane:Ana" and e["action"] == "task.cancelled" for e in entries), audit
    r = await post_hook(stack.api_url, body, headers)  # the same delivery again
    assert r.status_code == 200 and r.json() == {"accepted": False, "duplicate": True}

    # 5. any other external edit is reverted, with a comment saying the internal board is authoritative
    third = (
        await api.post("/v1/tasks", json={"title": "Stay in backlog", "status": "backlog", "repository": "boarded"})
    ).json()
    item3 = await until(lambda: item_for(plane, third["id"]))
    plane.edit(item3["id"], state=plane.state_id("started"))
    body, headers = plane.webhook(
        HOOK_SECRET,
        event="issue",
        action="update",
        data={"id": item3["id"]},
        activity={"field": "state", "actor": {"display_name": "Bo"}},
    )
    assert (await post_hook(stack.api_url, body, headers)).status_code == 200
    await until(
        lambda: (
            plane.group_of(plane.items[item3["id"]]) == "backlog"
            and any("authoritative" in c["comment_html"] for c in plane.comments.get(item3["id"], []))
        )
    )
    assert (await api.get(f"/v1/tasks/{third['id']}")).json()["status"] == "backlog"

    # no echo loop: Plane reporting board-sync's own revert changes nothing and adds no comment
    comments_before = len(plane.comments[item3["id"]])
    body, headers = plane.webhook(
        HOOK_SECRET,
        event="issue",
        action="update",
        data={"id": item3["id"]},
        activity={"field": "state", "actor": {"display_name": "Nexus bot"}},
    )
    assert (await post_hook(stack.api_url, body, headers)).status_code == 200
    metrics_url = f"http://127.0.0.1:{stack.metrics_ports['board-sync']}/metrics"
    await until(lambda: 'outcome="echo"' in httpx.get(metrics_url).text)
    assert len(plane.comments[item3["id"]]) == comments_before and plane.group_of(plane.items[item3["id"]]) == "backlog"

    # 6. drift without any webhook (an edit Plane never told us about) is found and repaired
    plane.edit(item3["id"], name="Renamed behind our back")
    await until(lambda: plane.items[item3["id"]]["name"] == "Stay in backlog")
    metrics = httpx.get(metrics_url).text
    assert "nexus_board_drift_repaired_total" in metrics
    assert plane.creates == 3 and plane.throttled == 0  # three tasks, three items; the client kept under the limit

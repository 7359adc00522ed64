"""Approval alerts and their buttons as a lead, a viewer, a stranger and a forger would press them;
agent text that carries markup; a gateway restarted mid-flow; a poison message on an alert subject.
The gateway runs in this process; core-api and the worker (which runs real agent runs) are real
processes, on the real NATS and FerretDB; Telegram is the fake Bot API."""

import random
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from nats.js.api import DeliverPolicy

from nexus.dev.stack import Stack
from nexus.events.bus import Publisher, connect
from nexus.events.payloads import GoalChanged, TaskChanged
from nexus.telegram_gateway.text import LIMIT, units
from tests.e2e.conftest import fake, running_stack, wait_for  # noqa: F401 — `fake`: the fake Bot API fixture
from tests.gitrepo import make_bare_repo
from tests.telegram_gateway.fake_bot_api import FakeBotApi
from tests.telegram_gateway.harness import admin, asker, gateway_settings, running_gateway

pytestmark = [pytest.mark.infra, pytest.mark.e2e]

BASE = random.randrange(10**8, 10**9)
LEAD, VIEWER, STRANGER = BASE + 1, BASE + 2, BASE + 3
MARKUP = "<script>alert(1)</script> **bold _under [link"
ASKER = """
steps:
  - tool_calls: [{name: run_command, args: {cmd: "echo '<script>alert(1)</script> **bold _under [link'"}}]
  - say: done
"""
FINAL = ("succeeded", "failed", "cancelled", "timed_out")


@pytest.fixture(scope="module")
def core(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, mongo_url: str, nats_auth: Path | None
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("flows")
    with running_stack(home, nats_url, mongo_url, services=["core-api", "worker"], nats_auth=nats_auth) as stack:
        stack.env["bare_repo"] = str(make_bare_repo(home))
        yield stack


@pytest.fixture(scope="module")
async def api(core: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin(core) as client:
        for user_id, identity, role in ((LEAD, "lead@example.com", "lead"), (VIEWER, "viewer@example.com", "viewer")):
            r = await client.post(
                "/v1/chat-bindings", json={"user_id": str(user_id), "identity": identity, "role": role}
            )
            assert r.status_code == 201, r.text
        r = await client.post("/v1/agents", json=asker(ASKER))
        assert r.status_code == 201, r.text
        r = await client.post(
            "/v1/repositories", json={"name": "demo", "url": core.env["bare_repo"], "default_branch": "main"}
        )
        assert r.status_code == 201, r.text
        yield client


async def approval_of_a_new_run(api: httpx.AsyncClient, title: str) -> dict:
    r = await api.post("/v1/tasks", json={"title": title, "assignee": "asker", "repository": "demo"})
    assert r.status_code == 201, r.text
    page = await wait_for(
        api, f"/v1/approvals?run_id={r.json()['current_run_id']}&status=all", lambda p: len(p["items"]) == 1
    )
    return page["items"][0]


async def subscribed(fake: FakeBotApi) -> None:
    await fake.send_text(LEAD, "/subscribe all")
    await fake.wait_message(LEAD, "Subscribed to everything")


def alerts_of(fake: FakeBotApi, approval_id: str) -> list[dict]:
    return [m for m in fake.sent(LEAD) if m.get("reply_markup") and approval_id in m["text"]]


async def test_buttons_pressed_by_everyone_twice_late_and_forged(
    core: Stack, api: httpx.AsyncClient, fake: FakeBotApi
) -> None:
    async with running_gateway(gateway_settings(core, fake), fake):
        await subscribed(fake)
        first = await approval_of_a_new_run(api, "approve me")
        alert = await fake.wait(lambda: next(iter(alerts_of(fake, first["id"])), None), "the approval alert")
        # The agent's command is shown as it is, inert: escaped inside <pre>, not formatting.
        assert "&lt;script&gt;alert(1)&lt;/script&gt; **bold _under [link" in alert["text"]
        assert "<script>" not in alert["text"] and units(alert["text"]) <= LIMIT

        answers = {}
        for who, data in (
            (STRANGER, f"d:a:{first['id']}"),
            (VIEWER, f"d:a:{first['id']}"),
            (LEAD, "x:forged"),
            (LEAD, "d:a:"),
            (LEAD, "d:r:apr_nothing_like_this"),
            (LEAD, f"d:a:{first['id']}"),
            (LEAD, f"d:r:{first['id']}"),
        ):
            answers[(who, data)] = (await fake.wait_answer(await fake.press(who, alert, data))).get("text", "")
        assert "not allowed to use this bot" in answers[(STRANGER, f"d:a:{first['id']}")]
        assert str(STRANGER) in answers[(STRANGER, f"d:a:{first['id']}")]
        assert not [m for m in fake.sent(LEAD) if "not allowed" in m["text"]]  # nothing said in the lead's chat
        assert "viewer" in answers[(VIEWER, f"d:a:{first['id']}")]
        assert "does nothing" in answers[(LEAD, "x:forged")]
        assert "not found" in answers[(LEAD, "d:a:")] and "not found" in answers[(LEAD, "d:r:apr_nothing_like_this")]
        assert answers[(LEAD, f"d:a:{first['id']}")].startswith("Approving")
        assert "Nothing changed" in answers[(LEAD, f"d:r:{first['id']}")]  # on its way, or already approved
        run = await wait_for(api, f"/v1/runs/{first['run_id']}", lambda x: x["status"] in FINAL)
        decided = (await api.get(f"/v1/approvals/{first['id']}")).json()
        assert (
            decided["status"] == "approved"
            and decided["decided_by"] == "lead@example.com"
            and run["status"] == "succeeded"
        )
        await fake.wait_message(LEAD, "Approved by", method="editMessageText")
        again = await fake.wait_answer(await fake.press(LEAD, alert, f"d:a:{first['id']}"))
        assert "already approved by lead@example.com" in again["text"]

        # Decided elsewhere (the API): the alert says so, and a press afterwards changes nothing.
        second = await approval_of_a_new_run(api, "rejected elsewhere")
        alert = await fake.wait(lambda: next(iter(alerts_of(fake, second["id"])), None), "the second alert")
        r = await api.post(f"/v1/approvals/{second['id']}/reject", json={"reason": MARKUP})
        assert r.status_code == 200, r.text
        edited = await fake.wait(
            lambda: next(
                (
                    m
                    for m in fake.sent(LEAD, "editMessageText")
                    if second["id"] in m["text"] and "Rejected" in m["text"]
                ),
                None,
            ),
            "the alert edited with the decision",
        )
        assert "&lt;script&gt;" in edited["text"] and "<script>" not in edited["text"]
        answer = await fake.wait_answer(await fake.press(LEAD, alert, f"d:a:{second['id']}"))
        assert "already rejected" in answer["text"]
        # The run failed with the reason the API gave: its alert carries it escaped.
        failed = await fake.wait(
            lambda: next(
                (m for m in fake.sent(LEAD) if "Run failed" in m["text"] and second["run_id"] in m["text"]), None
            ),
            "the run failed alert",
        )
        assert "&lt;script&gt;alert(1)&lt;/script&gt; **bold _under [link" in failed["text"]

        # Details: the approval's state, in the chat.
        before = len(fake.sent(LEAD))
        await fake.wait_answer(await fake.press(LEAD, alert, f"d:i:{second['id']}"))
        details = await fake.wait(
            lambda: next((m for m in fake.sent(LEAD)[before:] if "Status: <b>rejected</b>" in m["text"]), None),
            "the details",
        )
        assert second["id"] in details["text"]


async def test_a_restart_mid_flow_announces_each_approval_once(
    core: Stack, api: httpx.AsyncClient, fake: FakeBotApi
) -> None:
    settings = gateway_settings(core, fake)
    async with running_gateway(settings, fake):
        await subscribed(fake)
        before = await approval_of_a_new_run(api, "before the restart")
        await fake.wait(lambda: alerts_of(fake, before["id"]), "the alert before the restart")
    # The gateway is down while a run asks.
    during = await approval_of_a_new_run(api, "while the gateway is down")
    async with running_gateway(gateway_settings(core, fake), fake):
        alert = await fake.wait(lambda: next(iter(alerts_of(fake, during["id"])), None), "the alert after the restart")
        answer = await fake.wait_answer(await fake.press(LEAD, alert, f"d:a:{during['id']}"))
        assert answer["text"].startswith("Approving")
        await fake.wait(
            lambda: any(during["id"] in m["text"] for m in fake.sent(LEAD, "editMessageText")), "the decision edit"
        )
        await wait_for(api, f"/v1/runs/{during['run_id']}", lambda x: x["status"] in FINAL)
    assert len(alerts_of(fake, before["id"])) == 1 and len(alerts_of(fake, during["id"])) == 1
    # The command confirmed before the restart is not handled again by the next gateway.
    assert len([m for m in fake.sent(LEAD) if m["text"].startswith("Subscribed")]) == 1


async def test_a_poison_alert_is_dead_lettered_and_the_alerts_go_on(
    core: Stack, api: httpx.AsyncClient, fake: FakeBotApi, nats_creds: str
) -> None:
    async with running_gateway(gateway_settings(core, fake), fake):
        await subscribed(fake)
        nc = await connect(core.nats_url, "test-poison", creds=nats_creds)
        try:
            js = nc.jetstream()
            dlq = await js.subscribe(
                "nexus.dlq.nexus.evt.approval.requested", ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
            )
            await js.publish("nexus.evt.approval.requested", b"\xff not an envelope")
            for _ in range(50):
                letter = msgspec.json.decode((await dlq.next_msg(timeout=60)).data)["data"]
                if letter["consumer"] == "telegram-gw-approvals":
                    break
            assert "undecodable" in letter["reason"]
        finally:
            await nc.close()
        # The consumer lives on: the next approval is announced.
        after = await approval_of_a_new_run(api, "after the poison")
        await fake.wait(lambda: alerts_of(fake, after["id"]), "the alert after the poison")
        await api.post(f"/v1/approvals/{after['id']}/reject", json={"reason": "done testing"})
        await wait_for(api, f"/v1/runs/{after['run_id']}", lambda x: x["status"] in FINAL)


def test_no_secret_in_what_the_gateway_said(core: Stack) -> None:
    """The module's gateways logged through this process: the bot token stays out of the services' logs."""
    token_secret = FakeBotApi().token.split(":")[1]
    for log in Path(core.log_dir or ".").glob("*.log"):
        assert token_secret not in log.read_text(errors="replace"), log.name
    assert re.fullmatch(r"[\w-]+", token_secret)


def _balanced(message: str) -> bool:
    stack: list[str] = []
    for closing, name in re.findall(r"<(/?)([a-z]+)[^>]*>", message):
        if not closing:
            stack.append(name)
        elif not stack or stack.pop() != name:
            return False
    return not stack


async def test_a_goal_from_chat_its_alerts_with_agent_text_and_every_read(
    core: Stack, api: httpx.AsyncClient, fake: FakeBotApi, nats_creds: str
) -> None:
    async with running_gateway(gateway_settings(core, fake), fake):
        await fake.send_text(LEAD, "/goal Ship <b>it</b> & 😀 with asker in demo")
        created = await fake.wait_message(LEAD, "Goal <code>goal_")
        assert "Ship &lt;b&gt;it&lt;/b&gt; &amp; 😀" in created["text"]
        goal_id = re.search(r"goal_[0-9a-z]{26}", created["text"]).group(0)
        await wait_for(api, "/v1/goals", lambda page: any(g["id"] == goal_id for g in page["items"]))  # applied
        goal = await wait_for(api, f"/v1/goals/{goal_id}", lambda g: bool(g.get("meta_run_id")))
        run_id = goal["meta_run_id"]
        run = await wait_for(api, f"/v1/runs/{run_id}", lambda r: bool(r.get("task_id")))

        # What agents write is shown as written: escaped, cut under the limit, never half a tag.
        nc = await connect(core.nats_url, "test-goal-events", creds=nats_creds)
        try:
            pub = Publisher(nc.jetstream(), "test")
            await pub.publish(
                "task.created",
                TaskChanged(task_id="task_planned", status="ready", title=MARKUP, goal_id=goal_id),
            )
            await pub.publish(
                "goal.status_changed",
                GoalChanged(goal_id=goal_id, title="Ship it", status="done", summary=MARKUP + " " + "<i>" * 2000),
            )
        finally:
            await nc.close()
        planned = await fake.wait_message(LEAD, "Planned for goal")
        assert "&lt;script&gt;alert(1)&lt;/script&gt; **bold _under [link" in planned["text"]
        await fake.wait(lambda: [m for m in fake.sent(LEAD) if "Cost: $" in m["text"]], "the end of the goal's alert")
        done = [m["text"] for m in fake.sent(LEAD) if "Goal done" in m["text"] or "&lt;i" in m["text"]]
        assert len(done) >= 2 and all(units(t) <= LIMIT and _balanced(t) for t in done)
        assert "<script>" not in "".join(done) and "".join(done).count("&lt;i&gt;") == 2000

        # Every read, as a viewer; and what a viewer may not do.
        for text, expected in (
            (f"/status {goal_id}", goal_id),
            (f"/status {run_id}", run_id),
            (f"/status {run['task_id']}", run["task_id"]),
            ("/status", "Active runs"),
            ("/goals", goal_id),
            ("/runs", "Recent runs"),
            ("/approvals", "approval"),
            ("/agents", "asker"),
            ("/help", "viewer"),
            (f"/cancel {run_id}", "viewers can read but not cancel"),
            (f"/approve apr_{goal_id}", "viewer"),
        ):
            before = len(fake.sent(VIEWER))
            await fake.send_text(VIEWER, text)
            reply = await fake.wait(
                lambda before=before: next(iter(fake.sent(VIEWER)[before:]), None), f"the reply to {text}"
            )
            assert expected in reply["text"], (text, reply["text"])

        # A lead cancels the goal's run, and unsubscribes.
        await fake.send_text(LEAD, f"/cancel {goal_id}")
        await fake.wait_message(LEAD, "is not a run")
        await fake.send_text(LEAD, f"/cancel {run_id}")
        await fake.wait_message(LEAD, "Cancelling run")
        assert (await wait_for(api, f"/v1/runs/{run_id}", lambda x: x["status"] in FINAL))["status"] == "cancelled"
        await fake.send_text(LEAD, f"/unsubscribe {goal_id}")
        await fake.wait_message(LEAD, f"Unsubscribed from goal <code>{goal_id}")
        await fake.send_text(LEAD, "/unsubscribe")
        await fake.wait_message(LEAD, "Unsubscribed from all alerts")

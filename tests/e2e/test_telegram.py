"""Team leads in Telegram, against every service as a real process and a local fake of Telegram's Bot
API (python-telegram-bot's real Application talks HTTP to it). Polling: a goal from chat is planned by
a meta session and reported back; an approval alert with buttons is approved by a lead (the run goes
on and succeeds), rejected (the run fails with the reason), refused to a viewer, and a second press
changes nothing; an unknown user hears one refusal; a 429 is waited out; core-api refuses a decision
whose principal does not check out. Webhook: the secret is checked; an expired approval's alert says so
and a late press changes nothing."""

import asyncio
import re
import uuid
from pathlib import Path

import httpx
import msgspec
from nats.js.api import DeliverPolicy
import pytest

from nexus.dev.servers import free_ports
from nexus.events.bus import Publisher, connect
from nexus.events.payloads import ChatPrincipal, DecideApproval
from tests.e2e.conftest import running_stack, wait_for
from tests.gitrepo import make_bare_repo
from tests.telegram_gateway.fake_bot_api import FakeBotApi

pytestmark = [pytest.mark.e2e, pytest.mark.infra]

LEAD, VIEWER, STRANGER = 1001, 1002, 6666
FINAL = ("succeeded", "failed", "cancelled", "timed_out")
ASKER = """
steps:
  - tool_calls: [{name: run_command, args: {cmd: "touch approved.txt"}}]
  - tool_calls: [{name: write_file, args: {path: after.txt, content: "went on"}}]
  - say: done
"""
PLANNER = """
steps:
  - tool_calls:
      - {name: spawn_child, args: {title: "Write child-a", target_files: [child-a.txt], agent: child-writer}}
      - {name: spawn_child, args: {title: "Write child-b", target_files: [child-b.txt], agent: child-writer}}
  - tool_calls: [{name: finish, args: {summary: "planned two children"}}]
"""
CHILD = """
steps:
  - tool_calls: [{name: write_file, args: {path: "{{target_file}}", content: "hello\\n"}}]
  - tool_calls: [{name: finish, args: {summary: "wrote {{target_file}}"}}]
"""


def _admin(stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"}, timeout=30
    )


async def _setup(api: httpx.AsyncClient, bare_repo: Path) -> None:
    for user_id, identity, role in ((LEAD, "alice@example.com", "lead"), (VIEWER, "victor@example.com", "viewer")):
        r = await api.post("/v1/chat-bindings", json={"user_id": str(user_id), "identity": identity, "role": role})
        assert r.status_code == 201, r.text
    agents = [
        ("asker", ASKER, ["run_command", "write_file", "finish", "git_commit"], {"commands": {"default": "ask"}}),
        ("planner", PLANNER, ["spawn_child", "write_file", "note", "finish", "git_commit"], {}),
        ("child-writer", CHILD, ["write_file", "finish", "git_commit"], {}),
    ]
    for name, script, tools, perms in agents:
        r = await api.post(
            "/v1/agents",
            json={
                "name": name,
                "system_prompt": "test",
                "tools": tools,
                "permissions": {"can_commit": True, **perms},
                "llm": {"provider": "scripted", "script": script},
            },
        )
        assert r.status_code == 201, r.text
    r = await api.post("/v1/repositories", json={"name": "demo", "url": str(bare_repo), "default_branch": "main"})
    assert r.status_code == 201, r.text


async def _asker_approval(api: httpx.AsyncClient, title: str) -> dict:
    r = await api.post("/v1/tasks", json={"title": title, "assignee": "asker", "repository": "demo"})
    assert r.status_code == 201, r.text
    run_id = r.json()["current_run_id"]
    page = await wait_for(api, f"/v1/approvals?run_id={run_id}&status=all", lambda p: len(p["items"]) == 1)
    return page["items"][0]


def _buttons(message: dict) -> list[str]:
    return [b["callback_data"] for row in message["reply_markup"]["inline_keyboard"] for b in row]


async def _gateway_metric(stack, outcome: str) -> float:
    async with httpx.AsyncClient() as c:
        text = (await c.get(f"http://127.0.0.1:{stack.metrics_ports['telegram-gateway']}/metrics")).text
    m = re.search(rf'nexus_telegram_updates_total{{outcome="{outcome}"}} ([0-9.]+)', text)
    return float(m.group(1)) if m else 0.0


async def test_polling_goal_approvals_and_refusals(
    tmp_path: Path, nats_url: str, mongo_url: str, fake: FakeBotApi
) -> None:
    env = {
        "NEXUS_TELEGRAM_TOKEN": fake.token,
        "NEXUS_TELEGRAM_API_URL": fake.base_url,
        "NEXUS_TELEGRAM_POLL_TIMEOUT_S": "1",
        "NEXUS_TELEGRAM_DEFAULT_REPOSITORY": "demo",
        "NEXUS_TELEGRAM_SEND_RETRY_S": "0.2",
    }
    bare_repo = make_bare_repo(tmp_path)
    with running_stack(tmp_path, nats_url, mongo_url, env=env) as stack:
        async with _admin(stack) as api:
            await _setup(api, bare_repo)
            await fake.wait(lambda: fake.sent(None, "setMyCommands"), "the command menu")
            menu = fake.sent(None, "setMyCommands")[0]["commands"]
            assert {c["command"] for c in msgspec.json.decode(menu)} >= {
                "goal",
                "approve",
                "reject",
                "subscribe",
                "runs",
            }

            # An unknown user: one refusal, then silence.
            await fake.send_text(STRANGER, "/goals")
            await fake.wait_message(STRANGER, "not allowed")
            await fake.send_text(STRANGER, "/help")
            for _ in range(600):  # the gateway counts the update it ignored
                if await _gateway_metric(stack, "ignored") >= 1:
                    break
                await asyncio.sleep(0.1)
            assert await _gateway_metric(stack, "ignored") == 1
            assert len(fake.sent(STRANGER)) == 1

            # A 429 on the reply is waited out and the message arrives once.
            fake.throttle["sendMessage"] = [1]
            await fake.send_text(LEAD, "/subscribe all")
            await fake.wait_message(LEAD, "Subscribed to everything")
            assert [
                c.status for c in fake.calls if c.method == "sendMessage" and "Subscribed" in c.params.get("text", "")
            ] == [429, 200]

            # A viewer reads but cannot create.
            await fake.send_text(VIEWER, "/goal Not mine")
            await fake.wait_message(VIEWER, "viewers can read but not create goals")

            # /goal: created through core-api, planned by the meta session, progress and the end come back.
            await fake.send_text(LEAD, "/goal Two files with planner")
            created = await fake.wait_message(LEAD, "Goal <code>goal_")
            goal_id = re.search(r"goal_[0-9a-z]{26}", created["text"]).group(0)
            await wait_for(
                api, "/v1/goals", lambda page: any(g["id"] == goal_id for g in page["items"])
            )  # the command is applied
            goal = await wait_for(
                api, f"/v1/goals/{goal_id}", lambda g: g["status"] in ("done", "failed", "cancelled"), attempts=1800
            )
            assert goal["status"] == "done" and goal["meta_run_id"] and goal["created_by"] == "alice@example.com"
            runs = (await api.get("/v1/runs", params={"goal_id": goal_id, "limit": 10})).json()["items"]
            assert len(runs) == 3 and all(r["status"] == "succeeded" for r in runs), runs
            await fake.wait_message(LEAD, "Planned for goal")
            # This goal's end: the session's NATS server may still hold an earlier test's goal events.
            done = await fake.wait(
                lambda: next(
                    (
                        m
                        for m in fake.sent(LEAD, "sendMessage")
                        if "Goal done" in m.get("text", "") and goal_id in m["text"]
                    ),
                    None,
                ),
                f"Goal done for {goal_id}",
            )
            assert "planned two children" in done["text"]

            # Approval alerts reach the subscribed lead with buttons.
            yes = await _asker_approval(api, "approve me")
            no = await _asker_approval(api, "reject me")
            alert_yes = await fake.wait_message(LEAD, yes["id"])
            alert_no = await fake.wait_message(LEAD, no["id"])
            assert _buttons(alert_yes) == [f"d:a:{yes['id']}", f"d:r:{yes['id']}", f"d:i:{yes['id']}"]
            assert "touch approved.txt" in alert_yes["text"] and "asker" in alert_yes["text"]

            # A viewer cannot approve.
            answer = await fake.wait_answer(await fake.press(VIEWER, alert_yes, f"d:a:{yes['id']}"))
            assert "viewer" in answer["text"]
            assert (await api.get(f"/v1/approvals/{yes['id']}")).json()["status"] == "pending"

            # Approve: the paused run goes on and succeeds; the alert says who decided.
            answer = await fake.wait_answer(await fake.press(LEAD, alert_yes, f"d:a:{yes['id']}"))
            assert answer["text"].startswith("Approving")
            run = await wait_for(api, f"/v1/runs/{yes['run_id']}", lambda x: x["status"] in FINAL)
            assert run["status"] == "succeeded", run
            edited = await fake.wait_message(LEAD, "Approved by", method="editMessageText")
            assert int(edited["message_id"]) == alert_yes["message_id"] and "alice@example.com" in edited["text"]
            assert "reply_markup" not in edited  # the buttons are gone

            # A second press changes nothing and says why.
            answer = await fake.wait_answer(await fake.press(LEAD, alert_yes, f"d:r:{yes['id']}"))
            assert "already approved by alice@example.com" in answer["text"]
            approval = (await api.get(f"/v1/approvals/{yes['id']}")).json()
            assert approval["status"] == "approved" and approval["decided_by"] == "alice@example.com"

            # Reject: the run fails with the reason.
            answer = await fake.wait_answer(await fake.press(LEAD, alert_no, f"d:r:{no['id']}"))
            run = await wait_for(api, f"/v1/runs/{no['run_id']}", lambda x: x["status"] in FINAL)
            assert run["status"] == "failed" and run["reason"].startswith("rejected by alice@example.com"), run
            await fake.wait_message(LEAD, "Rejected by", method="editMessageText")
            await fake.wait_message(LEAD, "Run failed")

            # Audited with the chat user and the bound identity.
            audit = (await api.get("/v1/audit", params={"limit": 100})).json()["items"]
            mine = {(e["action"], e["actor"]) for e in audit if f"({LEAD})" in e["actor_name"]}
            assert {
                ("goal.create", "alice@example.com"),
                ("approval.approved", "alice@example.com"),
                ("approval.rejected", "alice@example.com"),
            } <= mine, audit

            # core-api checks the principal itself: a decision sent straight to the bus for a viewer or an
            # unbound user is refused (dead-lettered with why), and the approval stays pending.
            third = await _asker_approval(api, "nobody may approve me")
            nc = await connect(stack.nats_url, "test-intruder", creds=stack.creds("tools"))
            try:
                js = nc.jetstream()
                dlq = await js.subscribe(  # only what this test sends: the server may hold earlier tests' letters
                    "nexus.dlq.nexus.cmd.core.decide_approval", ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
                )
                pub = Publisher(js, "intruder")
                for who in (str(VIEWER), str(STRANGER)):
                    await pub.publish(
                        "core.decide_approval",
                        DecideApproval(
                            approval_id=third["id"], decision="approved", principal=ChatPrincipal(user_id=who)
                        ),
                    )
                await pub.publish("core.decide_approval", DecideApproval(approval_id=third["id"], decision="approved"))
                reasons = [
                    msgspec.json.decode((await dlq.next_msg(timeout=60)).data)["data"]["reason"] for _ in range(3)
                ]
            finally:
                await nc.close()
            assert (
                "may not decide approvals" in reasons[0] and "not bound" in reasons[1] and "no principal" in reasons[2]
            )
            assert (await api.get(f"/v1/approvals/{third['id']}")).json()["status"] == "pending"

    # The bot token is a secret: no service logged it.
    for log in tmp_path.glob("*.log"):
        assert fake.token.split(":")[1] not in log.read_text(errors="replace"), log.name


async def test_webhook_secret_and_a_late_press(tmp_path: Path, nats_url: str, mongo_url: str, fake: FakeBotApi) -> None:
    (hook_port,) = free_ports(1)
    secret = uuid.uuid4().hex
    env = {
        "NEXUS_TELEGRAM_TOKEN": fake.token,
        "NEXUS_TELEGRAM_API_URL": fake.base_url,
        "NEXUS_TELEGRAM_MODE": "webhook",
        "NEXUS_TELEGRAM_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/telegram",
        "NEXUS_TELEGRAM_WEBHOOK_LISTEN": "127.0.0.1",
        "NEXUS_TELEGRAM_WEBHOOK_PORT": str(hook_port),
        "NEXUS_TELEGRAM_WEBHOOK_SECRET": secret,
        "NEXUS_APPROVAL_TTL_S": "2",
    }
    bare_repo = make_bare_repo(tmp_path)
    with running_stack(tmp_path, nats_url, mongo_url, env=env) as stack:
        async with _admin(stack) as api:
            await _setup(api, bare_repo)
            await fake.wait(lambda: fake.webhook is not None, "setWebhook")
            assert fake.webhook == {"url": f"http://127.0.0.1:{hook_port}/telegram", "secret_token": secret}

            # Telegram's secret header is checked: a forged update is turned away and never handled.
            async with httpx.AsyncClient() as c:
                for _ in range(
                    100
                ):  # the gateway asks Telegram for the webhook before its route serves: 404 until then
                    r = await c.post(
                        fake.webhook["url"],
                        headers={"X-Telegram-Bot-Api-Secret-Token": "forged"},
                        json={
                            "update_id": 1,
                            "message": {
                                "message_id": 1,
                                "date": 0,
                                "text": "/subscribe all",
                                "chat": {"id": LEAD, "type": "private"},
                                "from": {"id": LEAD, "is_bot": False, "first_name": "x"},
                                "entities": [{"type": "bot_command", "offset": 0, "length": 10}],
                            },
                        },
                    )
                    if r.status_code != 404:
                        break
                    await asyncio.sleep(0.1)
            assert r.status_code == 403

            await fake.send_text(LEAD, "/subscribe all")
            await fake.wait_message(LEAD, "Subscribed to everything")
            # One reply to the command (an approval alert of this run may already follow it: it is subscribed now).
            assert len([m for m in fake.sent(LEAD) if "Subscribed to" in m["text"]]) == 1

            # An approval nobody decides in time: the alert says it expired; a late press changes nothing.
            late = await _asker_approval(api, "too slow")
            alert = await fake.wait_message(LEAD, late["id"])
            await wait_for(api, f"/v1/approvals/{late['id']}", lambda a: a["status"] == "expired", attempts=600)
            await fake.wait_message(LEAD, "Expired", method="editMessageText")
            answer = await fake.wait_answer(await fake.press(LEAD, alert, f"d:a:{late['id']}"))
            assert "already expired" in answer["text"]
            approval = (await api.get(f"/v1/approvals/{late['id']}")).json()
            assert approval["status"] == "expired" and approval["decided_by"] == "system"
            run = await wait_for(api, f"/v1/runs/{late['run_id']}", lambda x: x["status"] in FINAL)
            (session,) = run["sessions"]
            assert not [c for c in session["changes"] if c["type"] == "command-run"]  # the command never ran


async def test_without_a_token_the_gateway_follows_events_and_says_telegram_is_off(
    tmp_path: Path, nats_url: str, mongo_url: str
) -> None:
    with running_stack(tmp_path, nats_url, mongo_url, services=["telegram-gateway"]) as stack:
        url = f"http://127.0.0.1:{stack.metrics_ports['telegram-gateway']}/readyz"
        body = ""
        async with httpx.AsyncClient() as c:
            for _ in range(600):  # bounded polls until the gateway serves its ops port
                try:
                    r = await c.get(url)
                    body = r.text
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        assert r.status_code == 200 and "telegram: off" in body, body
        assert stack.procs["telegram-gateway"].poll() is None

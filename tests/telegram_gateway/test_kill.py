"""The gateway as a real process, SIGKILLed after Telegram took an approval alert and before the gateway
cleared it from its outbox (the fault matrix's telegram-gateway@approval once saw the alert twice there):
the next process finishes what the killed one began and the lead sees the alert once, edited once to say
who decided. core-api and the worker are real processes on the real NATS and FerretDB; Telegram is the
fake Bot API."""

import asyncio
import random
import signal
from pathlib import Path

import pytest

from nats.js.errors import NoKeysError

from nexus.events.bus import connect
from nexus.telegram_gateway.outbox import BUCKET, REPEAT
from nexus.telegram_gateway.store import MARKS_BUCKET, exists
from tests.e2e.conftest import fake, running_stack, wait_for  # noqa: F401 — `fake`: the fake Bot API fixture
from tests.gitrepo import make_bare_repo
from tests.telegram_gateway.fake_bot_api import FakeBotApi
from tests.telegram_gateway.harness import admin, asker

pytestmark = [pytest.mark.infra, pytest.mark.e2e]

LEAD = random.randrange(10**8, 10**9)
ASKER = """
steps:
  - tool_calls: [{name: run_command, args: {cmd: "touch approved.txt"}}]
  - say: done
"""


async def _until(what: str, cond, tries: int = 1200) -> None:
    for _ in range(tries):
        if await cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def test_a_gateway_killed_after_telegram_took_an_approval_alert_does_not_send_it_again(
    tmp_path: Path, nats_url: str, mongo_url: str, fake: FakeBotApi
) -> None:
    env = {
        "NEXUS_TELEGRAM_TOKEN": fake.token,
        "NEXUS_TELEGRAM_API_URL": fake.base_url,
        "NEXUS_TELEGRAM_POLL_TIMEOUT_S": "1",
        "NEXUS_TELEGRAM_SEND_RETRY_S": "0.2",
    }
    bare = make_bare_repo(tmp_path)
    services = ["core-api", "worker", "telegram-gateway"]
    with running_stack(tmp_path, nats_url, mongo_url, env=env, services=services) as stack:
        nc = await connect(stack.nats_url or "", "test-gateway-kill", creds=stack.creds("tools"))
        js = nc.jetstream()
        async with admin(stack) as api:
            r = await api.post("/v1/chat-bindings", json={"user_id": str(LEAD), "identity": "l@x.io", "role": "lead"})
            assert r.status_code == 201, r.text
            r = await api.post("/v1/agents", json=asker(ASKER))
            assert r.status_code == 201, r.text
            r = await api.post("/v1/repositories", json={"name": "demo", "url": str(bare), "default_branch": "main"})
            assert r.status_code == 201, r.text
            await fake.wait(lambda: fake.sent(None, "setMyCommands"), "the gateway's start")
            await fake.send_text(LEAD, "/subscribe all")
            await fake.wait_message(LEAD, "Subscribed")

            # The alert cannot reach the lead (a 502, which takes nothing) until the approval is decided and
            # the gateway knows it, so that the sender edits the alert right after Telegram takes it.
            fake.fail[f"sendMessage:{LEAD}"] = [(502, "Bad Gateway")] * 10_000
            r = await api.post("/v1/tasks", json={"title": "ask", "assignee": "asker", "repository": "demo"})
            assert r.status_code == 201, r.text
            page = await wait_for(
                api,
                f"/v1/approvals?run_id={r.json()['current_run_id']}&status=all",
                lambda p: len(p["items"]) == 1,
            )
            approval_id = page["items"][0]["id"]
            await fake.wait(
                lambda: any(c.status == 502 and approval_id in c.params.get("text", "") for c in fake.calls),
                "the alert tried",
            )
            r = await api.post(f"/v1/approvals/{approval_id}/approve")
            assert r.status_code == 200, r.text
            marks = await js.key_value(MARKS_BUCKET)
            await _until("the decision known to the gateway", lambda: exists(marks, f"decided.{approval_id}"))

            # Telegram takes the alert; the gateway's edit that follows it is held, and the gateway killed there.
            fake.hold.add(f"editMessageText:{LEAD}")
            fake.fail.pop(f"sendMessage:{LEAD}")
            await fake.wait(lambda: fake.holding, "the edit after the alert")
            stack.stop_service("telegram-gateway", signal.SIGKILL)
            await fake.release(f"editMessageText:{LEAD}")
            stack.start_service("telegram-gateway")

            outbox = await js.key_value(BUCKET)

            async def cleared() -> bool:
                try:
                    return not [k for k in await outbox.keys() if k.startswith(f"{LEAD}.")]
                except NoKeysError:
                    return True

            await _until("the outbox cleared", cleared)
            await fake.wait(lambda: len(fake.sent(None, "setMyCommands")) >= 2, "the restarted gateway's start")
        await nc.drain()

    alerts = [m for m in fake.sent(LEAD) if approval_id in m.get("text", "") and "reply_markup" in m]
    # before: the alert twice, the second headed as a possible repeat, both with buttons
    assert len(alerts) == 1, [m["text"][:60] for m in alerts]
    assert not [m for m in fake.sent(LEAD) if REPEAT in m.get("text", "")]
    edits = {m["text"] for m in fake.sent(LEAD, "editMessageText") if approval_id in m.get("text", "")}
    assert len(edits) == 1 and "Approved by" in next(iter(edits)), edits

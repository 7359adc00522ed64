"""Poison on the bus against the real services: an oversized command whose dead letter would outgrow
NATS's max_payload, a 950 KB goal title, an envelope whose type disagrees with its subject, and an
oversized launch. Each is dead-lettered with its reason (cut to fit, with size and sha256), nothing
of them is stored, core-api and the worker stay ready, and the next good command is handled."""

import asyncio
import hashlib
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from nexus.dev.stack import Stack
from nexus.events.bus import Publisher, connect
from nexus.events.catalog import DLQ_STREAM
from nexus.events.envelope import decode_raw, encode, make_envelope
from nexus.events.payloads import CreateGoal, DeadLetter, RunStatusChanged
from tests.e2e.conftest import running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.infra]


@pytest.fixture
def stack(tmp_path: Path, nats_url: str, mongo_url: str) -> Iterator[Stack]:
    with running_stack(tmp_path, nats_url, mongo_url, services=["core-api", "worker"]) as s:
        yield s


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"}, timeout=30
    ) as client:
        yield client


def _ready(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
        return r.status


async def _letters(js, subject: str, want: set[str]) -> dict[str, DeadLetter]:
    """Dead letters of `subject` whose original body hashes are in `want` (bounded wait)."""
    found: dict[str, DeadLetter] = {}
    for _ in range(300):
        sub = await js.subscribe(f"nexus.dlq.{subject}", stream=DLQ_STREAM, ordered_consumer=True)
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except TimeoutError:
                    break
                letter = msgspec.json.decode(decode_raw(msg.data).data, type=DeadLetter)
                if letter.body_sha256 in want:
                    found[letter.body_sha256] = letter
        finally:
            await sub.unsubscribe()
        if set(found) == want:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"dead letters for {subject} never all arrived: {len(found)}/{len(want)}")


async def test_poison_commands_are_dead_lettered_and_consumers_live_on(stack: Stack, api: httpx.AsyncClient) -> None:
    tag = uuid.uuid4().hex[:8]
    nc = await connect(stack.nats_url or "", "faults-poison", creds=stack.creds("tools"))
    js = nc.jetstream()
    try:
        escaped = encode(make_envelope("core.create_goal", CreateGoal(title=f"{tag}" + '"' * 400_000), source="poison"))
        huge = encode(make_envelope("core.create_goal", CreateGoal(title=tag + "x" * 950_000), source="poison"))
        wrong = encode(make_envelope("core.create_goal", CreateGoal(title=f"sneaky {tag}"), source="poison"))
        launch = encode(
            make_envelope("run.status", RunStatusChanged(status="running", reason='"' * 400_000), source="poison")
        )
        assert len(escaped) > 700_000 and len(huge) > 900_000
        await js.publish("nexus.cmd.core.create_goal", escaped)
        await js.publish("nexus.cmd.core.create_goal", huge)
        await js.publish("nexus.cmd.core.decide_approval", wrong)
        await js.publish("nexus.cmd.worker.launch_run", launch)
        await Publisher(js, "poison").publish("core.create_goal", CreateGoal(title=f"after the poison {tag}"))

        goals = await api.get("/v1/goals", params={"limit": 200})
        for _ in range(300):
            titles = [g["title"] for g in (await api.get("/v1/goals", params={"limit": 200})).json()["items"]]
            if f"after the poison {tag}" in titles:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the good command after the poison was never handled: {goals.text[:500]}")
        assert not [
            t for t in titles if tag in t and not t.startswith("after the poison")
        ]  # nothing of the poison stored

        sha = {
            name: hashlib.sha256(body).hexdigest()
            for name, body in {"escaped": escaped, "huge": huge, "wrong": wrong, "launch": launch}.items()
        }
        goal_letters = await _letters(js, "nexus.cmd.core.create_goal", {sha["escaped"], sha["huge"]})
        (mismatch,) = (await _letters(js, "nexus.cmd.core.decide_approval", {sha["wrong"]})).values()
        (bad_launch,) = (await _letters(js, "nexus.cmd.worker.launch_run", {sha["launch"]})).values()
        assert goal_letters[sha["escaped"]].truncated and goal_letters[sha["escaped"]].body_bytes == len(escaped)
        assert "$.title" in goal_letters[sha["huge"]].reason and goal_letters[sha["huge"]].truncated
        assert "disagrees with subject nexus.cmd.core.decide_approval" in mismatch.reason and not mismatch.truncated
        assert "disagrees with subject" in bad_launch.reason and bad_launch.truncated
        assert _ready(stack.metrics_ports["core-api"]) == 200 and _ready(stack.metrics_ports["worker"]) == 200
        assert (await api.get("/readyz")).status_code == 200
    finally:
        await nc.drain()

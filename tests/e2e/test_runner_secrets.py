"""Secret masking end to end: a run whose command uses ${secret:api_token}. The value reaches the
command by environment only (a directory named by it is refused) and nothing else: no message on any of the run's
NATS subjects, no API response about the run, its session or its event stream."""

import httpx
import msgspec
from nexus.events.bus import connect
import pytest

from nexus.events.catalog import RUNS_STREAM, run_filter
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.infra]
VALUE = "tok-e2e-7Hq2-never-shown"
SCRIPT = """
steps:
  - tool_calls:
      - {name: run_command, args: {cmd: "TOKEN=${secret:api_token} printenv TOKEN"}}
      - {name: run_command, args: {cmd: "mkdir ${secret:api_token}"}}
      - {name: list_dir, args: {path: "."}}
      - {name: note, args: {message: "used ${secret:api_token}"}}
  - say: "done with ${secret:api_token}"
"""


async def _all_run_messages(nats_url: str, run_id: str, creds: str) -> list[tuple[bytes, str]]:
    """Every message on nexus.run.<run_id>.>, body and headers, straight from JetStream."""
    nc = await connect(nats_url, "tests", creds=creds)
    try:
        sub = await nc.jetstream().subscribe(run_filter(run_id), stream=RUNS_STREAM, ordered_consumer=True)
        out = []
        while True:
            try:
                msg = await sub.next_msg(timeout=2)
            except TimeoutError:
                return out
            out.append((msg.data, repr(msg.headers)))
            if msg.metadata.num_pending == 0:
                return out
    finally:
        await nc.drain()


async def test_secret_never_leaves_the_command(api: httpx.AsyncClient, stack, nats_url, bare_repo) -> None:
    secrets = stack.home / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "api_token").write_text(VALUE + "\n")
    r = await api.post("/v1/agents", json={
        "name": "secretive", "system_prompt": "test", "secrets": ["api_token"],
        "permissions": {"commands": {"allow": ["printenv *", "mkdir *"], "default": "deny"}},
        "llm": {"provider": "scripted", "script": SCRIPT},
    })
    assert r.status_code == 201, r.text
    r = await api.post("/v1/repositories", json={"name": "demo", "url": str(bare_repo), "default_branch": "main"})
    assert r.status_code == 201, r.text
    r = await api.post("/v1/tasks", json={"title": "use the token", "assignee": "secretive", "repository": "demo"})
    assert r.status_code == 201, r.text
    run_id = r.json()["current_run_id"]
    run = await wait_for(api, f"/v1/runs/{run_id}", lambda x: x["status"] in ("succeeded", "failed", "timed_out"))
    assert run["status"] == "succeeded", run
    (session,) = run["sessions"]
    cmds = [c for c in session["changes"] if c["type"] == "command-run"]
    # printenv NAME exits 1 when NAME is unset: the command got the value, by environment only.
    assert [(c["cmd"], c["exitCode"]) for c in cmds] == [("TOKEN=${secret:api_token} printenv TOKEN", 0)]
    refused = [c for c in session["changes"] if c["type"] == "refused"]
    assert [c["reason"] for c in refused] == ["secret-in-argv"]  # a secret never names a file
    assert run["config"]["secrets"] == ["api_token"]
    assert not list(stack.home.glob(f"runs/{run_id}/*/workspace/{VALUE}"))

    messages = await _all_run_messages(nats_url, run_id, stack.creds("tools"))
    kinds = {msgspec.json.decode(body)["type"] for body, _ in messages}
    assert {"run.status", "run.llm", "run.tool", "run.command_run", "run.note", "run.session"} <= kinds, kinds
    responses = [
        (await api.get(f"/v1/runs/{run_id}")).text,
        (await api.get(f"/v1/sessions/{session['sessionId']}")).text,
        (await api.get("/v1/runs", params={"task_id": run["task_id"]})).text,
        (await api.get(f"/v1/runs/{run_id}/events")).text,  # SSE: the run is over, so the stream ends
    ]
    for text in [body.decode(errors="replace") + headers for body, headers in messages] + responses:
        assert VALUE not in text
    assert "${secret:api_token}" in responses[0]  # masked, not dropped

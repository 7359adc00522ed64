"""Secret masking end to end: a run whose command uses ${secret:api_token}. The value reaches the
command by environment only (a directory named by it is refused) and nothing else: no message on any of the run's
NATS subjects, no API response about the run, its session or its event stream, and not the run's page in
the UI, which shows the command's output and the diff of a file the value was written into, masked."""

import html
import json
import re

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
      - name: run_command
        args:
          cmd: >-
            TOKEN=${secret:api_token} python3 -c "import os; open('conf.txt', 'w').write('token=' + os.environ['TOKEN'] + chr(10) + 'mode=a' + chr(10))"
      - {name: edit_file, args: {path: conf.txt, old: "mode=a", new: "mode=<b>"}}
      - {name: run_command, args: {cmd: "rm conf.txt"}}
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


async def _ui_page(stack, path: str) -> str:
    """A page as an admin signed in to the UI sees it."""
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as ui:
        token = re.search(r'name="_csrf" value="([^"]+)"', (await ui.get("/ui/login")).text).group(1)  # type: ignore[union-attr]  # the login page always carries the token
        r = await ui.post("/ui/login", data={"_csrf": token, "key": stack.env["NEXUS_ADMIN_KEY"]})
        assert r.status_code == 303, r.text
        r = await ui.get(path)
        assert r.status_code == 200, r.text
        return r.text


async def test_secret_never_leaves_the_command(api: httpx.AsyncClient, stack, nats_url, bare_repo) -> None:
    secrets = stack.home / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "api_token").write_text(VALUE + "\n")
    r = await api.post(
        "/v1/agents",
        json={
            "name": "secretive",
            "system_prompt": "test",
            "secrets": ["api_token"],
            "permissions": {
                "commands": {"allow": ["printenv *", "mkdir *", "python3 *", "rm conf.txt"], "default": "deny"}
            },
            "llm": {"provider": "scripted", "script": SCRIPT},
        },
    )
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
    assert [(c["cmd"].split(" -c ")[0], c["exitCode"]) for c in cmds] == [
        ("TOKEN=${secret:api_token} printenv TOKEN", 0),
        ("TOKEN=${secret:api_token} python3", 0),
        ("rm conf.txt", 0),
    ]
    refused = [c for c in session["changes"] if c["type"] == "refused"]
    assert [c["reason"] for c in refused] == ["secret-in-argv"]  # a secret never names a file
    assert run["config"]["secrets"] == ["api_token"]
    assert not list(stack.home.glob(f"runs/{run_id}.*/workspace/{VALUE}"))

    messages = await _all_run_messages(nats_url, run_id, stack.creds("tools"))
    kinds = {msgspec.json.decode(body)["type"] for body, _ in messages}
    assert {
        "run.status",
        "run.llm",
        "run.tool",
        "run.command_run",
        "run.note",
        "run.session",
        "run.file_diff",
        "run.command_output",
    } <= kinds, kinds
    shown = [
        msgspec.json.decode(body)["data"]
        for body, _ in messages
        if msgspec.json.decode(body)["type"] in ("run.file_diff", "run.command_output")
    ]
    printed = next(d for d in shown if d.get("cmd", "").endswith("printenv TOKEN"))
    assert printed["output"] == "${secret:api_token}\n"
    (diff,) = [d for d in shown if d.get("rel_path") == "conf.txt"]
    assert " token=${secret:api_token}\n-mode=a\n+mode=<b>\n" in diff["diff"]
    page = await _ui_page(stack, f"/ui/runs/{run_id}")
    # The page shows both, escaped, the diff's lines styled: the markup in the file is text, not a tag.
    assert '<span class="add">+mode=&lt;b&gt;</span>' in page and '<span class="del">-mode=a</span>' in page
    assert re.search(r'<pre class="code output">\$\{secret:api_token\}\n</pre>', page), page
    responses = [
        (await api.get(f"/v1/runs/{run_id}")).text,
        (await api.get(f"/v1/sessions/{session['sessionId']}")).text,
        (await api.get("/v1/runs", params={"task_id": run["task_id"]})).text,
        (await api.get(f"/v1/runs/{run_id}/events")).text,  # SSE: the run is over, so the stream ends
        page,
        html.unescape(page),
        json.dumps(shown),
    ]
    for text in [body.decode(errors="replace") + headers for body, headers in messages] + responses:
        assert VALUE not in text
    assert "${secret:api_token}" in responses[0]  # masked, not dropped

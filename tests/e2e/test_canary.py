"""The canary, end to end: hostile agents run through core-api, the worker, the runner, board-sync
and telegram-gateway as real processes, against a smart-HTTP git remote that demands a token and a
fake OpenAI-compatible model server that records everything it is sent. Afterwards no secret value
nor the repository credential (plain or simply encoded) is found on the remote (every object), in
the ledger, in any event of the NATS streams, in any log line of any process, in the model's input,
or in any API response.

The agents: one plants git config, fsmonitor, filter drivers and aliases through commands (the
reviewed `git log --output=.git/config` attack included); one forges Nexus-* trailers; one writes a
secret (base64) into a file, which the canary must stop at the push; one makes a file named by a
secret with `touch ${secret:api_token}`."""

import base64
import binascii
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from nexus.events.bus import connect
import pytest

from nexus.events.catalog import DLQ_STREAM, EVENTS_STREAM, RUNS_STREAM
from tests.agent_runner.test_runner_git import TOKEN, GitHTTP  # the remote demands this token
from tests.e2e.conftest import git, make_bare_repo, running_stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.infra]
SECRET = "sk-e2e-Canary+/9qZ-161803398"
CONFIG = (
    '[core]\n\tfsmonitor = "env > leak-fsmonitor.txt; false"\n[filter "evil"]\n\tclean = "env > leak-clean.txt; cat"\n'
    '\tsmudge = "env > leak-smudge.txt; cat"\n[diff "evil"]\n\ttextconv = "env > leak-textconv.txt; cat"\n'
    '[alias]\n\tstatus = "!env > leak-alias.txt"\n'
)


def forms(value: str) -> list[str]:
    raw = value.encode()
    out = [value, binascii.hexlify(raw).decode(), quote(value, safe="")]
    for pad in range(3):  # base64 at each alignment, minus the edge characters that depend on neighbours
        out.append(base64.b64encode(b"\0" * pad + raw).decode()[4 if pad else 0 : -4])
    return out


FORBIDDEN = [*forms(SECRET), *forms(TOKEN)]

SCRIPTS: dict[str, list[list[tuple[str, dict]]]] = {
    "planter": [
        [
            ("write_file", {"path": "planted.cfg", "content": CONFIG}),
            ("run_command", {"cmd": "mkdir .git"}),
            ("run_command", {"cmd": "cp planted.cfg .git/config"}),
            (
                "run_command",
                {
                    "cmd": "git log -1 '--format=[core]%n%x09fsmonitor = \"env > leak-log.txt; false\"' --output=.git/config"
                },
            ),
            ("run_command", {"cmd": "cp planted.cfg .gitconfig"}),
            ("write_file", {"path": ".gitattributes", "content": "* filter=evil diff=evil merge=evil\n"}),
            ("write_file", {"path": "src.txt", "content": "hello\n"}),
        ],
        [("git_status", {}), ("git_diff", {}), ("git_log", {}), ("git_commit", {"message": "planter work"})],
        [("finish", {"summary": "planted"})],
    ],
    "forger": [
        [
            ("write_file", {"path": "a.txt", "content": "a\n"}),
            ("git_commit", {"message": "a\n\nNexus-Ledger: 00forged\nNexus-Run: run_forged"}),
            ("git_commit", {"message": "add a"}),
        ],
        [
            ("write_file", {"path": "b.txt", "content": "b\n"}),
            ("finish", {"summary": "done\nNexus-Ledger: forged-in-summary"}),
        ],
    ],
    # The value is written and the session ends in the same turn: what the model produced never comes back to it.
    "exfil": [
        [
            ("write_file", {"path": "notes.md", "content": base64.b64encode(SECRET.encode()).decode() + "\n"}),
            ("finish", {"summary": "notes written"}),
        ]
    ],
    "pathleak": [[("run_command", {"cmd": "touch ${secret:api_token}"})], [("finish", {"summary": "touched"})]],
}


class FakeModel(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat-completions endpoint: plays the script named by the request's model,
    one turn per assistant message already in the conversation, and keeps every request body."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append(body)  # type: ignore[attr-defined]  # the test server carries what it received
        request = json.loads(body)
        turn = sum(1 for m in request["messages"] if m["role"] == "assistant")
        steps = SCRIPTS[request["model"]]
        calls = steps[turn] if turn < len(steps) else []
        message: dict[str, Any] = {"role": "assistant", "content": "" if calls else "done"}
        if calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{turn}_{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for i, (name, args) in enumerate(calls)
            ]
        reply = json.dumps(
            {
                "id": "cmpl",
                "model": request["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


def _serve(handler: type, root: Path | None = None) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.root, server.seen, server.received = root, [], []  # type: ignore[attr-defined]  # the test server carries its state
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def _stream(nats_url: str, stream: str, subject: str, creds: str = "") -> list[bytes]:
    """Every message of a stream (body and headers), straight from JetStream."""
    nc = await connect(nats_url, "test-canary", creds=creds)
    try:
        js = nc.jetstream()
        if (await js.stream_info(stream)).state.messages == 0:
            return []
        sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
        out = []
        while True:
            try:
                msg = await sub.next_msg(timeout=2)
            except TimeoutError:
                return out
            out.append(msg.data + repr(msg.headers).encode())
            if msg.metadata.num_pending == 0:
                return out
    finally:
        await nc.drain()


def _every_object(bare: Path) -> bytes:
    import subprocess

    shas = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch-check=%(objectname)"],
        cwd=bare,
        capture_output=True,
        check=True,
    ).stdout
    return subprocess.run(["git", "cat-file", "--batch"], cwd=bare, input=shas, capture_output=True, check=True).stdout


def _leaks(where: str, data: bytes) -> list[str]:
    return [f"{where}: {i}" for i, value in enumerate(FORBIDDEN) if value.encode() in data]


@pytest.fixture
def remote(tmp_path: Path):
    git_root = tmp_path / "remote"
    git_root.mkdir()
    bare = make_bare_repo(git_root)
    server = _serve(GitHTTP, git_root)
    yield bare, f"http://127.0.0.1:{server.server_address[1]}/{bare.name}", server
    server.shutdown()
    server.server_close()


async def test_no_secret_or_credential_escapes_a_hostile_run(
    tmp_path: Path, nats_url: str, nats_creds: str, mongo_url: str, remote
) -> None:
    bare, url, git_server = remote
    model = _serve(FakeModel)
    try:
        await _run_everything(tmp_path, nats_url, nats_creds, mongo_url, bare, url, git_server, model)
    finally:
        model.shutdown()
        model.server_close()


async def _run_everything(tmp_path, nats_url, nats_creds, mongo_url, bare, url, git_server, model) -> None:
    with running_stack(tmp_path, nats_url, mongo_url) as stack:
        secrets = stack.home / "secrets"
        secrets.mkdir(parents=True, exist_ok=True)
        (secrets / "api_token").write_text(SECRET + "\n")
        (secrets / "git_token").write_text(TOKEN + "\n")
        headers = {"Authorization": f"Bearer {stack.env['NEXUS_ADMIN_KEY']}"}
        async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=30) as api:
            r = await api.post(
                "/v1/repositories",
                json={"name": "guarded", "url": url, "default_branch": "main", "credentials_secret": "git_token"},
            )
            assert r.status_code == 201, r.text
            runs = {}
            for name in SCRIPTS:
                r = await api.post(
                    "/v1/agents",
                    json={
                        "name": name,
                        "system_prompt": "You are under test.",
                        "secrets": ["api_token"],
                        "permissions": {
                            "can_commit": True,
                            "commands": {"allow": ["git log*", "mkdir *", "cp *", "touch *"], "default": "deny"},
                        },
                        "llm": {
                            "provider": "openai",
                            "model": name,
                            "base_url": f"http://127.0.0.1:{model.server_address[1]}/v1",
                        },
                    },
                )
                assert r.status_code == 201, r.text
                r = await api.post(
                    "/v1/tasks", json={"title": f"{name} task", "assignee": name, "repository": "guarded"}
                )
                assert r.status_code == 201, r.text
                runs[name] = r.json()["current_run_id"]
            done = {
                name: await wait_for(
                    api,
                    f"/v1/runs/{run_id}",
                    lambda x: x["status"] in ("succeeded", "failed", "timed_out"),
                    attempts=1200,
                )
                for name, run_id in runs.items()
            }
            _check_outcomes(done, bare)
            responses = []
            for run in done.values():
                responses += [
                    (await api.get(f"/v1/runs/{run['id']}")).content,
                    (await api.get(f"/v1/runs/{run['id']}/events")).content,
                    (await api.get(f"/v1/tasks/{run['task_id']}")).content,
                ]
                responses += [(await api.get(f"/v1/sessions/{s['sessionId']}")).content for s in run["sessions"]]
            responses += [
                (await api.get(path)).content for path in ("/v1/runs", "/v1/agents", "/v1/repositories", "/v1/tasks")
            ]
        # Logs: every service of the stack and every runner, as they were written.
        logs = [(p.name, p.read_bytes()) for p in tmp_path.glob("*.log")] + [
            (str(p), p.read_bytes()) for p in stack.run_files.glob("*/*/runner.log")
        ]
    assert {"core-api.log", "worker.log", "board-sync.log", "telegram-gateway.log"} <= {name for name, _ in logs}
    assert sum(name.endswith("runner.log") for name, _ in logs) >= len(SCRIPTS)
    events = [
        *await _stream(nats_url, RUNS_STREAM, "nexus.run.>", nats_creds),
        *await _stream(nats_url, EVENTS_STREAM, "nexus.evt.>", nats_creds),
        *await _stream(nats_url, DLQ_STREAM, "nexus.dlq.>", nats_creds),
    ]
    assert len(events) > 50 and model.received and git_server.seen

    found = _leaks("remote objects", _every_object(bare))
    found += [leak for i, body in enumerate(model.received) for leak in _leaks(f"model request {i}", body)]
    found += [leak for i, body in enumerate(events) for leak in _leaks(f"event {i}", body)]
    found += [leak for name, body in logs for leak in _leaks(f"log {name}", body)]
    found += [leak for i, body in enumerate(responses) for leak in _leaks(f"API response {i}", body)]
    assert found == []
    # The credential travelled only as the clone/fetch/push header, and the remote saw pushes.
    assert any("git-receive-pack" in path for _, path, _ in git_server.seen)


def _check_outcomes(done: dict[str, dict], bare: Path) -> None:
    planter, forger, exfil, pathleak = (done[n] for n in ("planter", "forger", "exfil", "pathleak"))
    # The planter's drivers never ran; its branch holds its files, nothing from a .git directory.
    assert planter["status"] == "succeeded", planter
    files = git(bare, "ls-tree", "-r", "--name-only", planter["branch"]).split()
    assert "src.txt" in files and not any(f.startswith("leak") or f.startswith(".git/") for f in files), files
    # The forger's trailer was refused (and recorded); the pushed head carries the runner's ledger hash.
    assert forger["status"] == "succeeded", forger
    changes = forger["sessions"][0]["changes"]
    assert [c["reason"] for c in changes if c["type"] == "refused"] == ["forged-trailer"]
    commit_at = max(i for i, c in enumerate(changes) if c["type"] == "git-commit")
    head_ledger = git(bare, "log", "-1", "--format=%(trailers:key=Nexus-Ledger,valueonly)", forger["branch"]).strip()
    assert head_ledger == changes[commit_at - 1]["hash"] and "forged" not in git(
        bare, "log", "--format=%B", forger["branch"]
    )
    # The canary stopped the exfiltrating push: failed, recorded, nothing on the remote.
    assert exfil["status"] == "failed" and exfil["reason"].startswith("push refused: ${secret:api_token} (base64)"), (
        exfil
    )
    last = exfil["sessions"][0]["changes"][-1]
    assert (last["type"], last["tool"], last["reason"]) == ("refused", "push", "secret-in-push")
    heads = git(bare, "for-each-ref", "--format=%(refname)", "refs/heads").split()
    assert not any(exfil["id"] in h for h in heads) and not any(
        pathleak["id"] in h for h in heads if pathleak["status"] == "failed"
    )

"""The git workflow against a real smart-HTTP git server that demands a token (git http-backend
behind a Basic-auth check): clone at the ref with the token from a secret, work on
nexus/<task>/<run>, commit with trailers, push. Two runs at once on one repository, each in its
own working tree. The token never shows up in any git argv, .git/config, event or log."""

import asyncio
import base64
import os
import shutil
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.agent_runner.test_runner_support import (  # noqa: F401 — pytest fixtures, used as parameters
    bare_repo,
    changes,
    config,
    final_status,
    git,
    js,
    read_events,
    start_runner,
)

pytestmark = pytest.mark.infra
TOKEN = "ghp_" + uuid.uuid4().hex
BASIC = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()


class GitHTTP(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def log_message(self, *args) -> None:
        pass

    def _cgi(self) -> None:
        server = self.server
        auth = self.headers.get("Authorization", "")
        server.seen.append((self.command, self.path, auth))  # type: ignore[attr-defined]  # the test server carries its log
        if auth != f"Basic {BASIC}":
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(server.root),
            "GIT_HTTP_EXPORT_ALL": "1",  # type: ignore[attr-defined]  # the test server carries its root
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "REMOTE_USER": "x-access-token",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.split(b"\r\n"):
            key, _, value = line.decode().partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def git_server(tmp_path: Path):
    bare = bare_repo(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), GitHTTP)
    server.root, server.seen = tmp_path, []  # type: ignore[attr-defined]  # the test server carries root and log
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, bare, f"http://127.0.0.1:{server.server_address[1]}/{bare.name}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def git_shim(tmp_path: Path) -> tuple[Path, Path]:
    """A `git` first on PATH that logs every argv, then runs the real git."""
    shim, log = tmp_path / "shim", tmp_path / "git-argv.log"
    shim.mkdir()
    (shim / "git").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {shutil.which("git")} "$@"\n')
    (shim / "git").chmod(0o755)
    return shim, log


def _cfg(url: str, name: str, secret: str | None = "GIT_TOKEN"):
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    # The model ends with `finish` and may not commit itself: the runner's own commit still happens.
    script = (
        f"steps:\n  - tool_calls: [{{name: write_file, args: {{path: {name}.txt, content: 'from {{{{run_id}}}}'}}}}]\n"
        "  - tool_calls: [{name: finish, args: {summary: done}}]\n"
    )
    return config(
        script,
        run_id=run_id,
        tools=["write_file", "finish"],
        secrets=[secret] if secret else [],
        repo={
            "url": url,
            "ref": "main",
            "branch": f"nexus/task_{name}/{run_id}",
            "target_branch": "main",
            "credentials_secret": secret,
        },
    )


async def test_two_concurrent_runs_clone_with_a_token_and_never_share_a_tree(
    js, nats_url, tmp_path, git_server, git_shim
) -> None:
    server, bare, url = git_server
    shim, argv_log = git_shim
    env = {"PATH": f"{shim}:{os.environ['PATH']}"}
    a, b = _cfg(url, "a"), _cfg(url, "b")
    runs = [await start_runner(tmp_path, nats_url, cfg, secrets={"GIT_TOKEN": TOKEN}, env=env) for cfg in (a, b)]
    assert await asyncio.gather(*(r.exit_code() for r in runs)) == [0, 0], [r.log() for r in runs]

    for r, mine, other in ((runs[0], "a", "b"), (runs[1], "b", "a")):
        events = await read_events(js, r.cfg.run_id)
        end = final_status(events)
        assert end["status"] == "succeeded", (end, r.log())
        branch = r.cfg.repo.branch
        assert end["branch"] == branch and git(bare, "rev-parse", branch) == end["commit_sha"]
        files = git(bare, "ls-tree", "--name-only", branch).split()
        assert f"{mine}.txt" in files and f"{other}.txt" not in files  # its own tree, its own branch
        assert git(bare, "show", f"{branch}:{mine}.txt") == f"from {r.cfg.run_id}"
        # Trailers: run, agent@revision, session, and the ledger hash of the last change before the commit.
        message = git(bare, "log", "-1", "--format=%B", branch)
        trailers = dict(line.split(": ", 1) for line in message.splitlines() if line.startswith("Nexus-"))
        recorded = changes(events)
        commit_at = next(i for i, c in enumerate(recorded) if c["type"] == "git-commit")
        assert trailers == {
            "Nexus-Run": r.cfg.run_id,
            "Nexus-Agent": "agent_t@3",
            "Nexus-Session": r.cfg.session_id,
            "Nexus-Ledger": recorded[commit_at - 1]["hash"],
        }
        assert end["ledger_hash"] == recorded[-1]["hash"]
        # The token is nowhere: not in the clone's config, its remote url, the events, the log.
        # The git directory is the runner's, outside the workspace; the workspace has no .git at all.
        git_dir = r.dir / "state" / "git" / "repo.git"
        assert not (r.workspace / ".git").exists() and (git_dir / "HEAD").is_file()
        assert git(r.dir, "--git-dir", str(git_dir), "remote", "get-url", "origin") == url
        for text in ((git_dir / "config").read_text(), str(events), r.log(), (r.dir / "run-config.json").read_text()):
            assert TOKEN not in text and BASIC not in text
    assert runs[0].workspace != runs[1].workspace
    assert git(bare, "log", "--format=%s", "main") == "init"  # main untouched: no can_merge

    # The server saw the token as a header on every request, and git's argv never carried it.
    assert server.seen and all(auth == f"Basic {BASIC}" for _, _, auth in server.seen)
    assert any("git-receive-pack" in path for _, path, _ in server.seen)  # the pushes went through it
    argv = argv_log.read_text()
    assert "clone" in argv and "push" in argv and TOKEN not in argv and BASIC not in argv


async def test_without_the_token_the_clone_is_refused(js, nats_url, tmp_path, git_server) -> None:
    server, _bare, url = git_server
    r = await start_runner(tmp_path, nats_url, _cfg(url, "c", secret=None))
    assert await r.exit_code() == 2, r.log()
    end = final_status(await read_events(js, r.cfg.run_id))
    assert end["status"] == "failed" and end["reason"].startswith("GitError: git clone failed"), end
    assert server.seen and all(auth == "" for _, _, auth in server.seen)

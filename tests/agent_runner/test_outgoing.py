"""The push path's checks on a real repository (no server): the canary finds a secret in every
place and encoding it looks at, and only commits the hypervisor made, with its trailers, may go out."""

import base64
import binascii
import re
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from nexus.agent_runner import outgoing, workspace
from nexus.domain.sessions import GitCommitChange, NoteChange
from nexus.events.payloads import RepoSpec
from tests.gitrepo import make_bare_repo

SECRET = "tok-Zq8+/w~ünï-31415926"
VALUES = {"api_token": SECRET}


@pytest.fixture
async def rg(tmp_path: Path) -> workspace.RunGit:
    bare = make_bare_repo(tmp_path)
    rg = workspace.RunGit(work_tree=tmp_path / "ws", private=tmp_path / "private", base={"PATH": "/usr/bin:/bin"})
    repo = RepoSpec(url=str(bare), ref="main", branch="nexus/t/run_1", target_branch="main")
    await workspace.prepare(repo, rg, agent_id="agent_t", token=None)
    return rg


async def _commit(rg: workspace.RunGit, files: dict[str, bytes], message: str = "work") -> str:
    for name, data in files.items():
        path = rg.work_tree / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    await workspace.git(rg, "add", "-A")
    await workspace.git(rg, "commit", "-q", "--no-verify", "--cleanup=verbatim", "-m", message)
    return await workspace.head(rg)


def _b64_at(offset: int) -> bytes:
    return base64.b64encode(b"x" * offset + SECRET.encode())


LEAKS = {
    "plain-blob": ({"a.txt": f"key={SECRET}\n".encode()}, "work", "plain"),
    "base64-offset-0": ({"a.txt": _b64_at(0)}, "work", "base64"),
    "base64-offset-1": ({"a.txt": _b64_at(1)}, "work", "base64"),
    "base64-offset-2": ({"a.txt": _b64_at(2)}, "work", "base64"),
    "base64-url": ({"a.txt": base64.urlsafe_b64encode(b"yy" + SECRET.encode())}, "work", "base64"),
    "base64-wrapped-in-json": (
        {"a.json": b'{"k": "' + base64.b64encode(b"prefix:" + SECRET.encode()) + b'"}'},
        "work",
        "base64",
    ),
    "hex-lower": ({"a.txt": binascii.hexlify(SECRET.encode())}, "work", "hex"),
    "hex-upper": ({"a.txt": binascii.hexlify(SECRET.encode()).upper()}, "work", "hex"),
    "url-encoded": ({"a.txt": quote(SECRET, safe="").encode()}, "work", "url-encoding"),
    "url-encoded-lower": (
        {"a.txt": re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), quote(SECRET, safe="")).encode()},
        "work",
        "url-encoding",
    ),
    "in-a-path": ({f"dir/{SECRET}.txt": b"x"}, "work", "plain"),
    "in-a-directory-name": ({f"{SECRET}/inner.txt": b"x"}, "work", "plain"),
    "in-the-commit-message": ({"a.txt": b"x"}, f"work\n\nthe key is {SECRET}", "plain"),
    "in-a-binary-blob": ({"a.bin": b"\x00\x01" + SECRET.encode() + b"\xff"}, "work", "plain"),
    # Objects are read a chunk at a time: a value across two chunks, and one in a later object.
    "across-a-chunk": ({"a.bin": b"x" * ((1 << 20) - 5) + SECRET.encode()}, "work", "plain"),
    "after-a-big-object": ({"a.bin": bytes(3 << 20), "b.txt": SECRET.encode()}, "work", "plain"),
}


@pytest.mark.parametrize("files,message,how", LEAKS.values(), ids=list(LEAKS))
async def test_the_canary_finds_a_secret_in_every_place_and_encoding(rg, files, message, how) -> None:
    await _commit(rg, files, message)
    why = await outgoing.find_leak(rg, VALUES)
    assert why.startswith("${secret:api_token}"), why
    assert (how == "plain") == ("(" not in why.split(" found")[0])
    assert SECRET not in why


async def test_the_canary_passes_clean_work_and_ignores_what_the_remote_already_has(rg) -> None:
    await _commit(rg, {"a.txt": b"nothing to see\n"})
    assert await outgoing.find_leak(rg, VALUES) == ""
    assert await outgoing.find_leak(rg, {"short": "abc"}) == ""  # too short to search for
    assert await outgoing.find_leak(rg, {"readme": "# demo"}) == ""  # on the remote already: not outgoing


async def test_provenance_accepts_only_the_hypervisors_commits_with_its_trailers(rg) -> None:
    trailers = {"Nexus-Run": "run_1", "Nexus-Agent": "agent_t@1", "Nexus-Session": "ses_1"}
    note = NoteChange(message="n", timestamp="t", hash="h0")
    body = "work\n\nNexus-Run: run_1\nNexus-Agent: agent_t@1\nNexus-Session: ses_1\nNexus-Ledger: h0"
    sha = await _commit(rg, {"a.txt": b"1"}, body)
    ledger = [note, GitCommitChange(sha=sha, branch="b", message="work", timestamp="t", hash="h1")]
    assert await outgoing.check_provenance(rg, ledger, trailers) == ""

    # A forged ledger hash on a recorded commit, and a commit nobody recorded: both refused.
    forged = await _commit(rg, {"b.txt": b"2"}, body.replace("h0", "h9"))
    refused = await outgoing.check_provenance(
        rg, [*ledger, GitCommitChange(sha=forged, branch="b", message="", timestamp="t", hash="h2")], trailers
    )
    assert refused == f"commit {forged[:12]} carries Nexus-* trailers the runner did not write"
    assert (await outgoing.check_provenance(rg, ledger, trailers)).endswith("was not made through the hypervisor")


async def test_runner_git_refuses_a_tampered_git_directory(rg) -> None:
    with open(rg.git_dir / "config", "a") as fh:
        fh.write('[core]\n\tfsmonitor = "touch /tmp/nexus-fsmonitor-ran; false"\n')
    with pytest.raises(workspace.GitError, match="changed outside the runner"):
        await workspace.has_changes(rg)
    assert not Path("/tmp/nexus-fsmonitor-ran").exists()


async def test_the_workspace_has_no_git_and_git_config_is_isolated(rg, tmp_path) -> None:
    assert not (rg.work_tree / ".git").exists() and (rg.git_dir / "HEAD").is_file()
    env = rg.env()
    assert env["GIT_CONFIG_GLOBAL"] == "/dev/null" and env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["HOME"] == str(rg.home) and list(rg.home.iterdir()) == []
    assert not any(key.startswith("GIT_CONFIG_KEY") for key in env)  # no credential outside clone/fetch/push
    # A repository planted in the workspace is not the one git uses.
    subprocess.run(
        ["git", "init", "-q", str(rg.work_tree)], check=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    )
    assert await workspace.git(rg, "rev-parse", "--git-dir") == str(rg.git_dir)

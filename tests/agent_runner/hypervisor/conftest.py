"""A sandbox per test: a git workspace, a sentinel directory beside it standing for "the rest of
the machine", a state file and a recorder, and a snapshot of everything so a test can prove
that nothing it did not mean to touch changed."""

import hashlib
import os
import stat
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from nexus.agent_runner.hypervisor import Hypervisor
from nexus.agent_runner.hypervisor.state import read_state
from nexus.domain.agents import CommandPolicy, Permissions
from nexus.domain.ledger import verify_chain
from nexus.domain.sessions import SessionChange, SessionState

SECRET_NAME = "API_KEY"
SECRET = "s3cr3t-Value-9f8e7d6c"
RUNNER_SECRET = "runner-env-secret-7c6b5a"  # in the runner's own environment as NEXUS_SECRET
SENTINEL_TEXT = "sentinel: must never change or leak\n"
# What these tests run by default: any ordinary program, and python3 named explicitly (it is an
# interpreter, so a wildcard would not let it run).
OPEN_POLICY = Permissions(commands=CommandPolicy(allow=["python3 *"], default="allow"))


@dataclass
class Sandbox:
    SECRET: ClassVar[str] = SECRET
    SECRET_NAME: ClassVar[str] = SECRET_NAME
    RUNNER_SECRET: ClassVar[str] = RUNNER_SECRET
    root: Path
    ws: Path
    sentinel: Path
    state_file: Path
    session: SessionState
    events: list[SessionChange] = field(default_factory=list)
    hv: Hypervisor | None = None

    def make(
        self,
        permissions: Permissions | None = None,
        approver: Callable[[str, str], Awaitable[bool]] | None = None,
        spawner: Callable[[dict], Awaitable[dict]] | None = None,
        **kwargs: Any,
    ) -> Hypervisor:
        async def recorder(change: SessionChange) -> None:
            self.events.append(change)

        self.hv = Hypervisor(
            workspace=self.ws,
            permissions=permissions or OPEN_POLICY,
            session=self.session,
            state_file=self.state_file,
            secrets={SECRET_NAME: SECRET},
            recorder=recorder,
            approver=approver,
            spawner=spawner,
            commit_trailers={"Nexus-Run": "run_test", "Nexus-Agent": "agent_test"},
            **({"git_dir": self.root / "gitdir"} | kwargs),
        )
        return self.hv

    def snapshot(self) -> dict[str, tuple]:
        """Every entry under root except the state directory: type, mode, content hash / target."""
        seen: dict[str, tuple] = {}
        skip = self.state_file.parent
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            here = Path(dirpath)
            if here == skip:
                dirnames[:] = []
                continue
            for name in dirnames + filenames:
                path = here / name
                st = path.lstat()
                rel = str(path.relative_to(self.root))
                if stat.S_ISLNK(st.st_mode):
                    seen[rel] = ("link", os.readlink(path))
                elif stat.S_ISREG(st.st_mode):
                    seen[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(path.read_bytes()).hexdigest())
                elif stat.S_ISDIR(st.st_mode):
                    seen[rel] = ("dir", stat.S_IMODE(st.st_mode))
                else:
                    seen[rel] = ("special", st.st_mode)
        return seen

    def sentinel_intact(self) -> bool:
        return (self.sentinel / "secret.txt").read_text() == SENTINEL_TEXT and (
            self.sentinel / "dir" / "inner.txt"
        ).exists()

    def assert_recorded(self) -> None:
        """The state file on disk holds exactly the session, the chain verifies, events match."""
        on_disk = read_state(self.state_file)
        assert on_disk.changes == self.session.changes
        assert verify_chain(on_disk.changes).ok
        assert self.events == self.session.changes
        blob = self.state_file.read_text()
        assert SECRET not in blob and RUNNER_SECRET not in blob


@pytest.fixture
def git_cmd() -> Callable[..., str]:
    return git


def git(ws: Path, *args: str) -> str:
    """git on a sandbox's repository, whose git directory lives beside the workspace (never in it)."""
    env = {**os.environ, "GIT_DIR": str(ws.parent / "gitdir"), "GIT_WORK_TREE": str(ws)}
    return subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True, text=True, env=env).stdout


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    monkeypatch.setenv("NEXUS_SECRET", RUNNER_SECRET)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "author@test.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Author")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "author@test.invalid")
    (tmp_path / "state").mkdir()
    sentinel = tmp_path / "sentinel"
    (sentinel / "dir").mkdir(parents=True)
    (sentinel / "secret.txt").write_text(SENTINEL_TEXT)
    (sentinel / "dir" / "inner.txt").write_text("inner\n")
    evil = sentinel / "evil.sh"
    evil.write_text("#!/bin/sh\ntouch pwned\n")
    evil.chmod(0o755)
    ws = tmp_path / "ws"
    ws.mkdir()
    git(ws, "init", "-q", "-b", "main")
    assert not (ws / ".git").exists()
    (ws / "README.md").write_text("# demo\nhello world\n")
    (ws / "src").mkdir()
    (ws / "src" / "app.py").write_text("print('hello')\n")
    git(ws, "add", "-A")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    box = Sandbox(
        root=tmp_path,
        ws=ws,
        sentinel=sentinel,
        state_file=tmp_path / "state" / "session.json",
        session=SessionState(session_id="ses_test", project_path=str(ws)),
    )
    box.make()
    return box

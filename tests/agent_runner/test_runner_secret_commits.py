"""A secret the model echoes into what the runner writes into git (its own commit message, the final text
the runner commits the work with) is masked before it is written: the run's local git directory and the
remote hold only the reference, the push goes through, and no event or state file holds the value."""

import binascii
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.agent_runner.test_runner_hostile_git import SECRET, SECRETS, _assert_nothing_leaked, _encodings, _repo
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
HEXED = binascii.hexlify(SECRET.encode()).decode()


def _objects(git_dir: Path) -> bytes:
    """The raw content of every object of a git directory (loose objects are compressed on disk)."""
    base = ["git", f"--git-dir={git_dir}", "cat-file"]
    shas = subprocess.run(
        [*base, "--batch-all-objects", "--batch-check=%(objectname)"], capture_output=True, check=True
    )
    return subprocess.run([*base, "--batch"], input=shas.stdout, capture_output=True, check=True).stdout


async def test_a_secret_echoed_into_commit_messages_is_masked_and_the_work_is_pushed(js, nats_url, tmp_path) -> None:
    bare = bare_repo(tmp_path)
    steps = [
        {
            "tool_calls": [
                {"name": "write_file", "args": {"path": "a.txt", "content": "first\n"}},
                {"name": "git_commit", "args": {"message": f"add a (token {SECRET})"}},
                {"name": "write_file", "args": {"path": "b.txt", "content": "second\n"}},
            ]
        },
        {"say": f"Done. The token was {SECRET}, hex {HEXED}."},  # the final text: the run's summary
    ]
    run_id = f"run_{uuid.uuid4().hex[:16]}"
    cfg = config(json.dumps({"steps": steps}), run_id=run_id, secrets=sorted(SECRETS), repo=_repo(bare, run_id))
    r = await start_runner(tmp_path, nats_url, cfg, secrets=SECRETS)
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, cfg.run_id)
    end = final_status(events)
    assert end["status"] == "succeeded", end  # the push was not refused: nothing outgoing held the value
    branch = cfg.repo.branch
    assert end["commit_sha"] == git(bare, "rev-parse", branch)
    messages = git(bare, "log", "--format=%B", f"main..{branch}")
    assert "add a (token ${secret:API_TOKEN})" in messages
    assert "Done. The token was ${secret:API_TOKEN}, hex ${secret:API_TOKEN} (hex)." in messages
    assert [c["reason"] for c in changes(events, "refused")] == []
    local = _objects(r.dir / "state" / "git" / "repo.git")
    for value in _encodings():
        assert value.encode() not in local
    _assert_nothing_leaked(bare, r, events)

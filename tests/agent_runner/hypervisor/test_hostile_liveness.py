"""A hostile workspace cannot make the runner stop answering, nor leave its repository unusable.

The runner's event loop is never the one walking the workspace: a tool that lists, copies, walks or
removes a tree does it in a thread. A workspace of 200,000 small files made search_text hold the loop
for ~9 s on the development box (its masked copy and the removal of that copy), and a command's private
HOME of as many files, removed after it in the Landlock and none modes, did the same; meanwhile the
runner sends no heartbeat (30 s without one and the worker takes the run for dead), no event, and
answers no cancellation."""

import asyncio
import functools
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from nexus.agent_runner.hypervisor import changeset, core, file_tools, paths, safegit, search
from nexus.agent_runner.hypervisor import sandbox as confinement


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _watch(monkeypatch: pytest.MonkeyPatch, seen: list[str], owner: Any, name: str) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def watched(*args: Any, **kwargs: Any) -> Any:
        if _on_loop():
            seen.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, watched)


@pytest.mark.parametrize("mode", ["bwrap", "landlock", "none"])
async def test_no_tool_walks_or_removes_a_tree_on_the_event_loop(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    if confinement.detect(mode) != mode:
        pytest.skip(f"{mode} is not available here")
    seen: list[str] = []
    for owner, name in [
        (search, "masked_copy"),
        (shutil, "rmtree"),
        (paths, "remove_tree"),
        (confinement, "remove_tree"),
        (changeset, "snapshot"),
        (safegit, "nested_git"),
        (file_tools, "listing"),
    ]:
        _watch(monkeypatch, seen, owner, name)
    hv = sandbox.make(sandbox_mode=mode)
    patch = "--- a/README.md\n+++ b/README.md\n@@ -1,2 +1,2 @@\n-# demo\n+# demo!\n hello world\n"
    for tool, args in [
        ("run_command", {"cmd": "mkdir -p tree/a"}),
        ("search_text", {"pattern": "hello"}),
        ("list_dir", {"path": "."}),
        ("apply_patch", {"patch": patch}),
        ("git_status", {}),
        ("write_file", {"path": "x.txt", "content": "x"}),
    ]:
        result = await hv.call(tool, args)
        assert result.ok, (tool, result.error)
    assert seen == []


async def test_a_git_tool_ended_at_its_timeout_leaves_no_lock_behind(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`git add -A` of a workspace holding gigabytes outlasts the git timeout; killed, it left
    `index.lock` in the run's git directory (out of the agent's reach), and every later commit failed
    ("index.lock: File exists") for the rest of the run — the runner's own final commit too."""
    hv = sandbox.make()
    made = await hv.call("run_command", {"cmd": "dd if=/dev/urandom of=big.bin bs=1M count=200"})
    assert made.ok, made.error
    monkeypatch.setattr(core, "GIT_TIMEOUT_S", 0.3)  # compressing 200 MiB of noise takes seconds
    slow = await hv.call("git_commit", {"message": "too big for its time"})
    assert not slow.ok and slow.error.startswith("refused (git-timeout)"), slow.error
    assert not (sandbox.root / "gitdir" / "index.lock").exists()
    monkeypatch.undo()
    removed = await hv.call("run_command", {"cmd": "rm big.bin"})
    assert removed.ok, removed.error
    (sandbox.ws / "small.txt").write_text("small\n")
    committed = await hv.call("git_commit", {"message": "small"})
    assert committed.ok, committed.error
    sandbox.assert_recorded()


def test_a_file_swapped_for_a_fifo_before_it_is_hashed_is_not_read(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change recording hashes each file a command changed. A process left behind (the Landlock
    fallback keeps a setsid() child where no cgroup can be made) can put a FIFO in the file's place between
    the look and the open, and feed it for ever: the hash read whatever came, to an end that need never
    come. Here the swap is made to land in that window, and the FIFO holds what a writer put in it."""
    import os

    path = tmp_path / "out.txt"
    path.write_text("regular\n")
    seen = os.lstat(path)
    path.unlink()
    os.mkfifo(path)
    real_lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda p, *a, **k: seen if os.fspath(p) == str(path) else real_lstat(p, *a, **k))
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # so the writer's end opens without waiting
    writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(writer, b"x" * 4096)
        hashed = changeset.digest(str(tmp_path), changeset.Changed("out.txt", deleted=False, size=8, sha256=""))
    finally:
        os.close(writer)
        os.close(reader)
    assert hashed.sha256 == ""


@pytest.mark.parametrize("name", [".gitignore", "sub/.gitignore", ".gitattributes", "sub/.gitattributes", ".mailmap"])
async def test_a_fifo_git_would_open_by_name_is_refused_not_waited_on(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """git opens these files by name wherever it meets them, and the open of a FIFO waits for a writer:
    each git tool waited out its timeout (60 s; 2 s here) and no commit could ever be made."""
    monkeypatch.setattr(core, "GIT_TIMEOUT_S", 2.0)
    hv = sandbox.make()
    plant = f"import os\nos.makedirs(os.path.dirname({name!r}) or '.', exist_ok=True)\nos.mkfifo({name!r})\n"
    (sandbox.ws / "plant.py").write_text(plant + "open('work.txt', 'w').write('work')\n")
    made = await hv.call("run_command", {"cmd": "python3 plant.py"})
    assert made.ok, made.error
    for tool, args in [("git_status", {}), ("git_diff", {}), ("git_commit", {"message": "work"})]:
        result = await hv.call(tool, args)
        assert not result.ok and result.error.startswith("refused (special-file)"), (tool, result.error)
        assert name in result.error
    log = await hv.call("git_log", {})  # reads no work tree, and no .mailmap
    assert log.ok, log.error
    removed = await hv.call("run_command", {"cmd": f"rm {name}"})
    assert removed.ok, removed.error
    committed = await hv.call("git_commit", {"message": "work"})
    assert committed.ok, committed.error
    sandbox.assert_recorded()


async def test_a_search_pattern_that_explodes_grep_is_refused_within_its_memory_cap(sandbox: Any) -> None:
    """grep runs the model's pattern outside the sandbox (on a masked copy), with no cap but its timeout:
    nested repetitions make its compiled pattern grow without end (4 GB in 20 s on the development box,
    against the runner's memory and the machine's). Now it runs within 1 GiB of address space: it stops
    at once, out of memory, and the call is refused with what grep said."""
    hv = sandbox.make()
    (sandbox.ws / "a.txt").write_text("hello\n")
    result = await hv.call("search_text", {"pattern": "((x{32767}){32767})"})
    assert not result.ok and result.error.startswith("refused (invalid-pattern)"), result
    assert "memory exhausted" in result.error.lower(), result.error
    after = await hv.call("search_text", {"pattern": "hel+o"})  # grep runs on
    assert after.ok and "a.txt" in after.output, after

"""Hostile calls the hypervisor lets run, because running them is harmless: the shell syntax
stays literal, the environment and secrets do not leak, output and time are bounded, and every
process the command started is gone afterwards. Each asserts the safe outcome and the record."""

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from nexus.domain.agents import CommandPolicy, Permissions
from nexus.domain.sessions import CommandRunChange, FileReadChange, FileWriteChange, RefusedChange


def _alive(pid: int) -> bool:
    """Running and not a zombie (a zombie is dead; only its parent has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _with_marker(marker: str) -> list[int]:
    """Host pids of live processes whose command line holds marker (the sandbox has its own pid
    namespace, so the pids a command sees are not the host's)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read() and _alive(int(entry)):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def _marked_dead(marker: str, within_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while (alive := _with_marker(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _wait_dead(pids: list[int], within_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


async def _run(box: Any, cmd: str, **extra: Any) -> tuple[Any, CommandRunChange]:
    result = await box.hv.call("run_command", {"cmd": cmd, **extra})
    assert result.ok, result.error
    change = box.session.changes[-1]
    assert isinstance(change, CommandRunChange)
    return result, change


@pytest.mark.parametrize(
    ("cmd", "literal"),
    [
        ("echo hi; rm -rf README.md", "hi; rm -rf README.md"),
        ("echo hi && touch pwned", "hi && touch pwned"),
        ("echo $(touch pwned)", "$(touch pwned)"),
        ("echo `touch pwned`", "`touch pwned`"),
        ("echo hi | tee pwned", "hi | tee pwned"),
        ("echo hi > pwned", "hi > pwned"),
        ("echo $HOME $NEXUS_SECRET", "$HOME $NEXUS_SECRET"),
        ("echo *", "*"),
    ],
    ids=["semicolon", "and-and", "dollar-paren", "backticks", "pipe", "redirect", "variables", "glob"],
)
async def test_shell_syntax_in_arguments_stays_literal(sandbox: Any, cmd: str, literal: str) -> None:
    before = sandbox.snapshot()
    result, change = await _run(sandbox, cmd)
    assert result.output.startswith(literal + "\n")
    assert change.cmd == cmd and change.exit_code == 0
    assert sandbox.snapshot() == before  # no pwned file, README.md still there
    sandbox.assert_recorded()


@pytest.mark.parametrize("cmd", ["env", "printenv", "python3 -c 'import os; print(dict(os.environ))'"])
async def test_runner_environment_does_not_reach_commands(sandbox: Any, cmd: str) -> None:
    # Even a runner that hands over its whole environment does not leak NEXUS_* or secrets.
    hv = sandbox.make(base_env={**os.environ, "DEPLOY_TOKEN": sandbox.SECRET, "PATH": os.environ["PATH"]})
    result = await hv.call("run_command", {"cmd": cmd})
    assert result.ok
    assert "PATH" in result.output  # the command did print its environment: the checks below see it
    assert sandbox.RUNNER_SECRET not in result.output
    assert "NEXUS_" not in result.output
    assert "DEPLOY_TOKEN" not in result.output and sandbox.SECRET not in result.output
    sandbox.assert_recorded()


async def test_default_environment_is_minimal(sandbox: Any) -> None:
    result, _ = await _run(sandbox, "env")
    names = {line.split("=", 1)[0] for line in result.output.splitlines() if "=" in line}
    assert names <= {
        "PATH",
        "PWD",
        "HOME",
        "TMPDIR",
        "LANG",
        "LC_ALL",
        "TZ",
        "GIT_TERMINAL_PROMPT",
        "GIT_CONFIG_NOSYSTEM",
        "GIT_CONFIG_GLOBAL",
        "GIT_CEILING_DIRECTORIES",
        "GIT_OPTIONAL_LOCKS",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
    }
    # HOME is an empty private directory: never the workspace (a .gitconfig written there would be git's).
    home = next(line.split("=", 1)[1] for line in result.output.splitlines() if line.startswith("HOME="))
    assert not home.startswith(str(sandbox.ws)) and os.listdir(home) == []
    assert "GIT_CONFIG_GLOBAL=/dev/null" in result.output


@pytest.mark.parametrize(
    "cmd",
    [
        "TOKEN=${secret:API_KEY} printenv TOKEN",
        "TOKEN=${secret:API_KEY} env",
        "TOKEN=${secret:API_KEY} python3 -c 'import os; print(os.environ[\"TOKEN\"] * 3)'",
        "TOKEN=${secret:API_KEY} python3 -c 'import os, sys; sys.stderr.write(os.environ[\"TOKEN\"])'",
        "TOKEN=${secret:API_KEY} timeout 10 printenv TOKEN",
    ],
    ids=["printenv", "env", "repeated", "stderr", "behind-a-wrapper"],
)
async def test_secret_reaches_the_command_by_environment_and_is_never_shown(sandbox: Any, cmd: str) -> None:
    result, change = await _run(sandbox, cmd)
    assert "${secret:API_KEY}" in result.output  # the command did get the value: it came back masked
    assert sandbox.SECRET not in result.output
    assert change.cmd == cmd and sandbox.SECRET not in change.cmd
    assert all(sandbox.SECRET not in str(event) for event in sandbox.events)
    sandbox.assert_recorded()


async def test_secret_is_never_in_the_command_line(sandbox: Any) -> None:
    # From inside: the command's own argv. Were the value there, it would come back masked.
    cmd = "TOKEN=${secret:API_KEY} python3 -c 'print(open(\"/proc/self/cmdline\").read())'"
    result, change = await _run(sandbox, cmd)
    assert change.exit_code == 0 and "${secret:API_KEY}" not in result.output and "python3" in result.output
    # From the host, while it runs: no process has the value in its command line.
    script = (
        "import os, time\nopen('started', 'w').write('1')\nwhile not os.path.exists('stop'):\n    time.sleep(0.02)\n"
    )
    (sandbox.ws / "hold.py").write_text(script)
    running = asyncio.ensure_future(
        sandbox.hv.call("run_command", {"cmd": "TOKEN=${secret:API_KEY} python3 hold.py", "timeout_s": 20})
    )
    for _ in range(400):
        if (sandbox.ws / "started").exists():
            break
        await asyncio.sleep(0.025)
    assert (sandbox.ws / "started").exists()
    assert _with_marker(sandbox.SECRET) == []
    assert _with_marker("hold.py")  # the command is running, and visible to this scan
    (sandbox.ws / "stop").write_text("1")
    assert (await running).ok


@pytest.mark.parametrize(
    "cmd",
    [
        "echo ${secret:API_KEY}",
        "touch ${secret:API_KEY}",
        "mkdir x-${secret:API_KEY}",
        "env TOKEN=${secret:API_KEY} printenv TOKEN",
        "X=pre${secret:API_KEY} printenv X",
    ],
)
async def test_secret_in_argv_or_a_file_name_is_refused(sandbox: Any, cmd: str) -> None:
    before = sandbox.snapshot()
    result = await sandbox.hv.call("run_command", {"cmd": cmd})
    assert result.error.startswith(("refused (secret-in-argv)", "refused (env-not-allowed)")), result.error
    assert isinstance(sandbox.session.changes[-1], RefusedChange)
    assert sandbox.snapshot() == before
    sandbox.assert_recorded()


async def test_secret_cut_by_the_output_cap_is_not_half_shown(sandbox: Any) -> None:
    cap = 4096
    hv = sandbox.make(permissions=Permissions(commands=CommandPolicy(allow=["python3 *"], max_output_bytes=cap)))
    # The cap falls in the middle of the secret: it is masked before the cut.
    cmd = (
        f'T=${{secret:API_KEY}} python3 -c \'import os, sys; sys.stdout.write("x" * {cap - 8} + os.environ["T"] * 2)\''
    )
    result = await hv.call("run_command", {"cmd": cmd})
    assert result.ok
    head = sandbox.SECRET[:8]
    assert head not in result.output and "output truncated" in result.output


async def test_secret_written_to_a_file_stays_a_reference(sandbox: Any) -> None:
    result = await sandbox.hv.call("write_file", {"path": "conf.env", "content": "KEY=${secret:API_KEY}\n"})
    assert result.ok
    assert (sandbox.ws / "conf.env").read_text() == "KEY=${secret:API_KEY}\n"


async def test_secret_leaked_into_a_file_is_masked_when_read(sandbox: Any) -> None:
    (sandbox.ws / "leak.txt").write_text(f"token={sandbox.SECRET}\n")
    result = await sandbox.hv.call("read_file", {"path": "leak.txt"})
    assert result.output == "token=${secret:API_KEY}\n"
    grep = await sandbox.hv.call("search_text", {"pattern": "token"})
    assert sandbox.SECRET not in grep.output and "${secret:API_KEY}" in grep.output
    note = await sandbox.hv.call("note", {"message": f"I found {sandbox.SECRET}"})
    assert note.ok
    assert sandbox.SECRET not in sandbox.session.notes[-1]
    sandbox.assert_recorded()


async def test_oversized_output_is_truncated_and_says_so(sandbox: Any) -> None:
    cap = sandbox.hv.permissions.commands.max_output_bytes
    result, change = await _run(sandbox, "python3 -c 'print(\"x\" * 5_000_000)'")
    body = result.output.split("\n[exit code")[0]
    assert len(body.encode()) == cap
    assert f"showed {cap} of 5000001 bytes" in result.output
    assert change.output_truncated and change.exit_code == 0


async def test_endless_output_is_stopped_by_the_timeout(sandbox: Any) -> None:
    result, change = await _run(sandbox, "yes", timeout_s=0.5)
    assert change.exit_code == 124 and change.output_truncated
    assert "timed out" in result.output


async def test_timeout_kills_the_whole_process_group_including_forked_children(sandbox: Any) -> None:
    marker = f"forker-{os.getpid()}-{time.monotonic_ns()}"
    (sandbox.ws / "forker.py").write_text("import os, time\nos.fork()\ntime.sleep(60)\n")
    result, change = await _run(sandbox, f"python3 forker.py {marker}", timeout_s=1)
    assert change.exit_code == 124 and "timed out after 1s" in result.output
    assert _marked_dead(marker) == []


@pytest.mark.parametrize("how", ["background", "setsid", "double-fork"])
async def test_children_do_not_outlive_the_command(sandbox: Any, how: str) -> None:
    marker = f"survivor-{how}-{os.getpid()}-{time.monotonic_ns()}"
    child = ["python3", "-c", "import time; time.sleep(60)", marker]
    script = {
        "background": f"import subprocess\nsubprocess.Popen({child!r})\n",
        "setsid": f"import subprocess\nsubprocess.Popen({child!r}, start_new_session=True)\n",
        "double-fork": f"import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execvp('python3', {child!r})\n    os._exit(0)\n",
    }[how]
    (sandbox.ws / "bg.py").write_text(script)
    _, change = await _run(sandbox, "python3 bg.py")
    assert change.exit_code == 0
    assert _marked_dead(marker) == []


async def test_timeout_is_capped_by_the_policy(sandbox: Any) -> None:
    hv = sandbox.make(permissions=Permissions(commands=CommandPolicy(allow=["sleep *"], timeout_s=0.5)))
    result = await hv.call("run_command", {"cmd": "sleep 30", "timeout_s": 1000})
    assert "timed out after 0.5s" in result.output  # the policy's cap, not the 1000 s asked for


async def test_commands_read_no_stdin(sandbox: Any) -> None:
    result, change = await asyncio.wait_for(_run(sandbox, "cat"), 10)
    assert change.exit_code == 0 and result.output.startswith("\n[exit code 0]")


async def test_symlink_made_by_a_command_is_not_followed(sandbox: Any) -> None:
    # The argv check cannot see this link's target; the path check at use must.
    made = await sandbox.hv.call("run_command", {"cmd": "python3 -c \"import os; os.symlink(os.sep + 'etc', 'esc')\""})
    assert made.ok and (sandbox.ws / "esc").is_symlink()
    for tool, args in [
        ("read_file", {"path": "esc/passwd"}),
        ("list_dir", {"path": "esc"}),
        ("write_file", {"path": "esc/pwned", "content": "x"}),
    ]:
        result = await sandbox.hv.call(tool, args)
        assert not result.ok and "outside-workspace" in result.error
        assert isinstance(sandbox.session.changes[-1], RefusedChange)
    assert not Path("/etc/pwned").exists()
    sandbox.assert_recorded()


async def test_write_to_a_hard_link_cuts_it_instead_of_writing_outside(sandbox: Any) -> None:
    os.link(sandbox.sentinel / "secret.txt", sandbox.ws / "hard")
    result = await sandbox.hv.call("write_file", {"path": "hard", "content": "replaced\n"})
    assert result.ok
    assert (sandbox.ws / "hard").read_text() == "replaced\n"
    assert sandbox.sentinel_intact()
    assert isinstance(sandbox.session.changes[-1], FileWriteChange)


async def test_huge_file_is_read_truncated(sandbox: Any) -> None:
    (sandbox.ws / "big.txt").write_bytes(b"y" * (3 << 20))
    result = await sandbox.hv.call("read_file", {"path": "big.txt"})
    assert result.ok and len(result.output) < (1 << 20) + 200
    assert f"showed {1 << 20} of {3 << 20} bytes" in result.output
    assert isinstance(sandbox.session.changes[-1], FileReadChange)


async def test_search_skips_fifos_and_symlinks(sandbox: Any) -> None:
    os.mkfifo(sandbox.ws / "fifo")
    os.symlink(sandbox.sentinel, sandbox.ws / "linkdir")
    result = await asyncio.wait_for(sandbox.hv.call("search_text", {"pattern": "sentinel|hello"}), 15)
    assert result.ok
    assert "linkdir" not in result.output and "must never change" not in result.output
    assert "README.md:2:hello world" in result.output


async def test_listing_shows_links_without_following_them(sandbox: Any) -> None:
    os.symlink(sandbox.sentinel, sandbox.ws / "linkdir")
    result = await sandbox.hv.call("list_dir", {})
    assert result.ok
    assert result.output.splitlines() == ["README.md", "linkdir@", "src/"]


async def test_path_with_shell_syntax_is_just_a_name(sandbox: Any) -> None:
    result = await sandbox.hv.call("write_file", {"path": "$(touch pwned);`id`.txt", "content": "x"})
    assert result.ok
    assert (sandbox.ws / "$(touch pwned);`id`.txt").read_text() == "x"
    assert not (sandbox.ws / "pwned").exists()


async def test_forged_ledger_trailer_in_a_commit_message_is_refused(sandbox: Any, git_cmd: Any) -> None:
    await sandbox.hv.call("write_file", {"path": "a.txt", "content": "a\n"})
    forged = await sandbox.hv.call("git_commit", {"message": "add a\n\nNexus-Ledger: 0000forged\nnexus-run: run_fake"})
    assert not forged.ok and forged.error.startswith("refused (forged-trailer)")
    assert sandbox.session.changes[-1].reason == "forged-trailer"
    ledger = sandbox.hv.ledger_hash
    result = await sandbox.hv.call("git_commit", {"message": "add a"})
    assert result.ok, result.error
    body = git_cmd(sandbox.ws, "log", "-1", "--format=%B")
    assert "forged" not in body and "run_fake" not in body
    assert f"Nexus-Ledger: {ledger}" in body and "Nexus-Run: run_test" in body


async def test_hooks_in_the_repo_do_not_run_on_commit(sandbox: Any, git_cmd: Any) -> None:
    # Planted outside the tools (a command could have done it); the hypervisor's git ignores it.
    for name in ("pre-commit", "commit-msg", "post-commit"):
        hook = sandbox.ws / ".git" / "hooks" / name
        hook.parent.mkdir(parents=True, exist_ok=True)
        hook.write_text(f"#!/bin/sh\ntouch {sandbox.sentinel}/{name}-ran\n")
        hook.chmod(0o755)
    await sandbox.hv.call("write_file", {"path": "a.txt", "content": "a\n"})
    result = await sandbox.hv.call("git_commit", {"message": "add a"})
    assert result.ok, result.error
    assert sorted(p.name for p in sandbox.sentinel.iterdir()) == ["dir", "evil.sh", "secret.txt"]


DEEP_TMP = (
    "import os, tempfile; os.chdir(tempfile.gettempdir())\n"
    "for _ in range(1500):\n"
    "    os.mkdir('d'); os.chdir('d')\n"
    "print('deep')\n"
)


@pytest.mark.parametrize("mode", ["landlock", "none"])
async def test_a_temporary_tree_deeper_than_any_recursion_is_cleared_after_the_command(sandbox: Any, mode: str) -> None:
    """Without bwrap a command's HOME and TMPDIR are a private directory the hypervisor removes after it:
    a tree 1,500 levels deep there is removed too, and the command's result comes back (shutil.rmtree,
    recursive, raised RecursionError through the tool call)."""
    from nexus.agent_runner.hypervisor import sandbox as sandbox_mod

    if sandbox_mod.detect(mode) != mode:
        pytest.skip("Landlock is not available here")
    hv = sandbox.make(sandbox_mode=mode)
    (sandbox.ws / "deep.py").write_text(DEEP_TMP)
    before = set(os.listdir(tempfile.gettempdir()))
    result = await hv.call("run_command", {"cmd": "python3 deep.py"})
    assert result.ok and result.output.startswith("deep\n"), result
    left = {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("nexus-cmd-")}
    room = hv.env["HOME"]  # the command's own directory is made in the hypervisor's HOME room
    left |= {n for n in os.listdir(room) if n.startswith("nexus-cmd-")}
    assert not left, left
    sandbox.assert_recorded()

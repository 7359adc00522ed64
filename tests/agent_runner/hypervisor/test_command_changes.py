"""Every file a command creates, changes or deletes in the workspace is in the ledger, whether its
command line names it or not: programs that write files they are never told the name of (a suffix,
a prefix, an archive's members, a copied tree, a backup, an interpreter) cannot write unrecorded."""

import gzip
import hashlib
import io
import tarfile
import zipfile
from typing import Any

import pytest

from nexus.domain.agents import CommandPolicy, Permissions
from nexus.domain.sessions import CommandRunChange, FileWriteChange


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


# (command, files to put in the workspace first, the paths it writes without naming them)
UNNAMED_WRITES = {
    "gzip-suffix": ("gzip -d -S x notes.txtx", {"notes.txtx": gzip.compress(b"unzipped\n")}, ["notes.txt"]),
    "csplit-suffix": ("csplit -s -f part -b %03d.md lines.txt 2", {"lines.txt": b"one\ntwo\n"}, ["part000.md"]),
    "split-prefix": ("split -l 1 lines.txt piece", {"lines.txt": b"one\ntwo\n"}, ["pieceaa", "pieceab"]),
    "tar-extract": (
        "tar -xf bundle.tar",
        {"bundle.tar": _tar({"deep/inside.txt": b"from tar\n"})},
        ["deep/inside.txt"],
    ),
    "unzip": ("unzip -q bundle.zip", {"bundle.zip": _zip({"zipped/file.txt": b"from zip\n"})}, ["zipped/file.txt"]),
    "cp-recursive": ("cp -r src copied", {}, ["copied/app.py"]),
    "sed-backup": ("sed -i.orig s/hello/bye/ README.md", {}, ["README.md", "README.md.orig"]),
    "interpreter": (
        "python3 -c \"open('hidden.bin','wb').write(b'x')\"",
        {},
        ["hidden.bin"],
    ),
}


@pytest.mark.parametrize(("cmd", "files", "unnamed"), UNNAMED_WRITES.values(), ids=UNNAMED_WRITES.keys())
async def test_a_file_a_command_writes_without_naming_it_is_recorded(
    sandbox: Any, cmd: str, files: dict[str, bytes], unnamed: list[str]
) -> None:
    for rel, data in files.items():
        (sandbox.ws / rel).write_bytes(data)
    result = await sandbox.hv.call("run_command", {"cmd": cmd})
    assert result.ok, result.error
    assert "[exit code 0]" in result.output, result.output
    command = sandbox.session.changes[-1]
    assert isinstance(command, CommandRunChange)
    writes = {c.rel_path: c for c in sandbox.session.changes[:-1] if isinstance(c, FileWriteChange)}
    for rel in unnamed:
        assert rel in writes, (rel, sorted(writes))
        assert writes[rel].sha256 == hashlib.sha256((sandbox.ws / rel).read_bytes()).hexdigest()
        assert writes[rel].bytes == (sandbox.ws / rel).stat().st_size
        assert rel in result.output
    assert command.files_changed == len(writes)
    sandbox.assert_recorded()


async def test_a_deletion_and_a_change_with_its_time_set_back_are_recorded(sandbox: Any) -> None:
    """Same size, the old modification time put back: the change time still moves."""
    (sandbox.ws / "keep.txt").write_text("aaaa\n")
    (sandbox.ws / "rewrite.py").write_text(
        "import os\n"
        "st = os.stat('keep.txt')\n"
        "open('keep.txt', 'w').write('bbbb\\n')\n"
        "os.utime('keep.txt', ns=(st.st_atime_ns, st.st_mtime_ns))\n"
    )
    result = await sandbox.hv.call("run_command", {"cmd": "python3 rewrite.py"})
    assert result.ok and "[exit code 0]" in result.output, result
    result = await sandbox.hv.call("run_command", {"cmd": "rm src/app.py"})
    assert result.ok, result.error
    writes = [c for c in sandbox.session.changes if isinstance(c, FileWriteChange)]
    assert [(c.rel_path, c.sha256) for c in writes] == [
        ("keep.txt", hashlib.sha256(b"bbbb\n").hexdigest()),
        ("src/app.py", ""),
    ]


async def test_a_command_that_changes_nothing_records_no_file(sandbox: Any) -> None:
    result = await sandbox.hv.call("run_command", {"cmd": "cat README.md"})
    assert result.ok, result.error
    assert [type(c) for c in sandbox.session.changes] == [CommandRunChange]
    assert sandbox.session.changes[-1].files_changed == 0


async def test_past_the_itemised_cap_the_count_still_tells(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from nexus.agent_runner.hypervisor import changeset

    monkeypatch.setattr(changeset, "MAX_ITEMISED", 3)
    result = await sandbox.hv.call("run_command", {"cmd": "python3 -c \"[open(f'f{i}','w') for i in range(10)]\""})
    assert result.ok, result.error
    assert len([c for c in sandbox.session.changes if isinstance(c, FileWriteChange)]) == 3
    assert sandbox.session.changes[-1].files_changed == 10


async def test_a_workspace_too_large_to_track_runs_only_rm(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the walk's limit a command's changes cannot be told, so it is refused; rm names what it deletes,
    so it runs, and once the workspace is back under the limit commands run again."""
    from nexus.agent_runner.hypervisor import changeset

    for i in range(60):
        (sandbox.ws / "src" / f"m{i}.py").write_text("")
    # README.md, src and its files are past it; what a command's /tmp adds to the HOME room while it runs
    # (its directory, the mount points of paths below /tmp) is not.
    monkeypatch.setattr(changeset, "MAX_ENTRIES", 50)
    result = await sandbox.hv.call("run_command", {"cmd": "touch x"})
    assert not result.ok and "workspace-too-large" in result.error
    assert not (sandbox.ws / "x").exists()
    result = await sandbox.hv.call("run_command", {"cmd": "rm -r src"})
    assert result.ok and "[exit code 0]" in result.output, result
    result = await sandbox.hv.call("run_command", {"cmd": "touch x"})
    assert result.ok and "[exit code 0]" in result.output, result
    assert [c.rel_path for c in sandbox.session.changes if isinstance(c, FileWriteChange)] == ["x"]


async def test_a_name_that_is_no_utf8_is_recorded_escaped(sandbox: Any) -> None:
    sandbox.make(Permissions(commands=CommandPolicy(allow=["python3 *"], default="allow")))
    result = await sandbox.hv.call("run_command", {"cmd": "python3 -c \"open(b'odd\\\\xff','w')\""})
    assert result.ok, result.error
    writes = [c.rel_path for c in sandbox.session.changes if isinstance(c, FileWriteChange)]
    assert writes == ["odd\\xff"]
    sandbox.assert_recorded()


async def test_a_file_named_after_a_secret_is_recorded_by_reference(sandbox: Any) -> None:
    """A command given a secret can name a file after it, even so long that the record's cut falls
    inside the value: the ledger and the model see its reference, never the value or its head."""
    make = (
        f"T=${{secret:{sandbox.SECRET_NAME}}} python3 -c "
        "\"import os; t = os.environ['T']; os.makedirs('d' * 195, exist_ok=True); "
        "open(t, 'w'); open('d' * 195 + '/' + t, 'w')\""
    )
    result = await sandbox.hv.call("run_command", {"cmd": make})
    assert result.ok and "[exit code 0]" in result.output, result
    writes = [c.rel_path for c in sandbox.session.changes if isinstance(c, FileWriteChange)]
    assert f"${{secret:{sandbox.SECRET_NAME}}}" in writes
    for text in (*writes, result.output):
        assert "/" + sandbox.SECRET[:2] not in text  # no head of the value after the cut
    sandbox.assert_recorded()


async def test_a_command_that_pushes_the_workspace_past_the_limit_deletes_nothing_on_record(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files the walk no longer reaches after the command are not recorded as deleted; the command is
    told at once that only rm runs now."""
    from nexus.agent_runner.hypervisor import changeset

    monkeypatch.setattr(changeset, "MAX_ENTRIES", 5)  # README.md, src, src/app.py and two more
    result = await sandbox.hv.call("run_command", {"cmd": "touch a b c d e f"})
    assert not result.ok and "workspace-too-large" in result.error and "after the command" in result.error
    writes = [c for c in sandbox.session.changes if isinstance(c, FileWriteChange)]
    assert writes and all(c.sha256 for c in writes), writes
    refused = await sandbox.hv.call("run_command", {"cmd": "touch g"})
    assert not refused.ok and "workspace-too-large" in refused.error


async def test_control_characters_in_a_name_are_recorded_escaped(sandbox: Any) -> None:
    """A newline or a terminal escape sequence in a file name reaches no ledger or event as it is."""
    result = await sandbox.hv.call("run_command", {"cmd": "python3 -c \"open('a\\nb\\x1b[31mc', 'w')\""})
    assert result.ok and "[exit code 0]" in result.output, result
    writes = [c.rel_path for c in sandbox.session.changes if isinstance(c, FileWriteChange)]
    assert writes == ["a\\x0ab\\x1b[31mc"]
    assert "\x1b" not in result.output

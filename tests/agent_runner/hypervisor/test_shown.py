"""What a file write and a command looked like, as the hypervisor hands it on for people: a diff
per file write and an output tail per command, each beside its change's seq, masked, capped."""

from typing import Any

from nexus.agent_runner.hypervisor import shown
from nexus.events.payloads import CommandOutput, FileDiff

WRITER = "import os; open('conf.txt', 'w').write('token=' + os.environ['T'] + chr(10) + 'mode=a' + chr(10))"


def _collect(sandbox: Any) -> list:
    got: list = []

    async def shower(content: Any) -> None:
        got.append(content)

    sandbox.make(shower=shower)
    return got


async def test_a_diff_per_file_write_and_the_output_of_each_command_masked(sandbox: Any) -> None:
    got = _collect(sandbox)
    hv = sandbox.hv
    # A command puts the secret's value into a file and prints it; then the file is edited around it.
    assert (await hv.call("run_command", {"cmd": f'T=${{secret:{sandbox.SECRET_NAME}}} python3 -c "{WRITER}"'})).ok
    assert (await hv.call("run_command", {"cmd": f"T=${{secret:{sandbox.SECRET_NAME}}} printenv T"})).ok
    assert (await hv.call("edit_file", {"path": "conf.txt", "old": "mode=a", "new": "mode=b"})).ok
    assert (await hv.call("write_file", {"path": "new.txt", "content": "fresh\n"})).ok
    assert sandbox.SECRET in (sandbox.ws / "conf.txt").read_text()  # the file really holds the value
    assert [type(c) for c in got] == [CommandOutput, CommandOutput, FileDiff, FileDiff]
    # The file the command wrote is in the ledger first (seq 0), without a view: its old content is not known.
    assert sandbox.session.changes[0].rel_path == "conf.txt"
    seqs = [c.seq for c in sandbox.session.changes[1:]]
    assert [c.seq for c in got] == seqs and {c.session_id for c in got} == {sandbox.session.session_id}
    ref = f"${{secret:{sandbox.SECRET_NAME}}}"
    printed, edit, created = got[1], got[2], got[3]
    assert printed.exit_code == 0 and printed.output == ref + "\n" and not printed.truncated
    assert edit.rel_path == "conf.txt"
    assert f" token={ref}\n-mode=a\n+mode=b\n" in edit.diff  # the secret's line is context, masked
    assert created.diff.startswith("--- /dev/null\n+++ b/new.txt\n") and "+fresh\n" in created.diff
    for content in got:
        assert sandbox.SECRET not in repr(content)


async def test_diffs_and_outputs_are_capped_and_binary_files_are_not_diffed(sandbox: Any) -> None:
    got = _collect(sandbox)
    hv = sandbox.hv
    big = "".join(f"line {i} {'x' * 60}\n" for i in range(2000))  # ~140 KB: diffed, cut at the cap
    assert (await hv.call("write_file", {"path": "big.txt", "content": big})).ok
    huge = "y" * (shown.DIFF_MAX_FILE_BYTES + 1)
    assert (await hv.call("write_file", {"path": "huge.txt", "content": huge})).ok
    assert (await hv.call("write_file", {"path": "bin.dat", "content": "a\0b"})).ok
    assert (await hv.call("run_command", {"cmd": "seq 1 5000"})).ok
    diff, too_large, binary, output = got
    assert diff.truncated and len(diff.diff.encode()) <= shown.DIFF_CAP_BYTES and diff.diff.endswith("\n")
    assert too_large.too_large and too_large.diff == "" and binary.binary and binary.diff == ""
    assert output.truncated and output.total_bytes > shown.OUTPUT_CAP_BYTES
    assert len(output.output.encode()) <= shown.OUTPUT_CAP_BYTES and output.output.endswith("4999\n5000\n")


async def test_a_failing_shower_loses_the_view_not_the_run(sandbox: Any) -> None:
    async def shower(content: Any) -> None:
        raise RuntimeError("bus down")

    hv = sandbox.make(shower=shower)
    assert (await hv.call("write_file", {"path": "a.txt", "content": "a\n"})).ok
    sandbox.assert_recorded()


def test_views_mask_a_secret_in_the_encodings_the_canary_knows() -> None:
    import base64
    from urllib.parse import quote

    from nexus.agent_runner.hypervisor.secrets import SecretBox

    value = "sk-live-Quokka-8Jd2+/x-271828"
    box = SecretBox({"TOKEN": value})
    for prefix in ("", "a", "ab"):  # each base64 alignment
        text = base64.b64encode((prefix + value).encode()).decode()
        masked = box.mask_forms(f"out: {text}\n")
        assert "${secret:TOKEN} (base64)" in masked
    for encoded, how in (
        (value.encode().hex(), "hex"),
        (value.encode().hex().upper(), "hex"),
        (quote(value, safe=""), "url-encoding"),
    ):
        assert box.mask_forms(f"= {encoded} =") == f"= ${{secret:TOKEN}} ({how}) ="
    assert box.mask_forms(f"plain {value}") == "plain ${secret:TOKEN}"


async def test_an_encoded_value_reaches_neither_the_model_nor_the_ledger(sandbox: Any) -> None:
    """A command allowed an interpreter can print a secret's base64 or hex; the model could then put it
    in a note or an approval, which are published as they are recorded. Everything the model reads
    back and every change recorded is masked in the encodings the canary knows, not only literally."""
    import base64
    import binascii

    approvals: list[tuple[str, str]] = []

    async def approver(action: str, detail: str) -> bool:
        approvals.append((action, detail))
        return True

    hv = sandbox.make(approver=approver)
    raw = sandbox.SECRET.encode()
    forms = [base64.b64encode(b"k=" + raw).decode(), binascii.hexlify(raw).decode()]
    encode = "import base64, binascii, os; t = os.environ['T'].encode(); print(base64.b64encode(b'k=' + t).decode(), binascii.hexlify(t).decode())"
    printed = await hv.call("run_command", {"cmd": f'T=${{secret:{sandbox.SECRET_NAME}}} python3 -c "{encode}"'})
    assert printed.ok and "[exit code 0]" in printed.output, printed
    noted = await hv.call("note", {"message": f"found {forms[0]} and {forms[1]}"})
    asked = await hv.call("request_approval", {"action": f"use {forms[1]}", "detail": f"the key {forms[0]}"})
    assert noted.ok and asked.ok
    seen = [printed.output, noted.output, asked.output, *map(repr, sandbox.session.changes), *map(repr, approvals)]
    for text in seen:
        assert forms[0].rstrip("=")[4:] not in text and forms[1] not in text, text
    assert "${secret:API_KEY} (hex)" in printed.output
    sandbox.assert_recorded()

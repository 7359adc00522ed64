"""A secret reference is substituted only inside the running command; its value reaches no run
event (every subject of the run, read back from JetStream), no log, and not the model."""

import pytest

from tests.agent_runner.test_runner_support import changes, config, final_status, js, read_events, start_runner  # noqa: F401 — pytest fixtures, used as parameters

pytestmark = pytest.mark.infra
VALUE = "tok-9Zq81-do-not-leak"
SCRIPT = """
steps:
  - say: "using ${secret:API_TOKEN}"
    tool_calls:
      - {name: run_command, args: {cmd: "TOKEN=${secret:API_TOKEN} printenv TOKEN"}}
      - {name: run_command, args: {cmd: "TOKEN=${secret:API_TOKEN} env"}}
      - {name: run_command, args: {cmd: "mkdir ${secret:API_TOKEN}"}}
      - {name: list_dir, args: {path: "."}}
      - {name: write_file, args: {path: ref.txt, content: "${secret:API_TOKEN}"}}
      - {name: run_command, args: {cmd: "T=${secret:NOT_DECLARED} printenv T"}}
  - say: done
"""


async def test_secret_value_never_leaves_the_command(js, nats_url, tmp_path) -> None:
    cfg = config(
        SCRIPT,
        secrets=["API_TOKEN"],
        permissions={"commands": {"allow": ["printenv *", "env", "mkdir *"], "default": "deny"}},
    )
    r = await start_runner(tmp_path, nats_url, cfg, secrets={"API_TOKEN": VALUE})
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, cfg.run_id)
    assert final_status(events)["status"] == "succeeded"
    printenv, env = changes(events, "command-run")
    # printenv NAME exits 1 when NAME is not set: the command did get the value, by environment.
    assert (
        printenv["cmd"] == "TOKEN=${secret:API_TOKEN} printenv TOKEN"
        and printenv["exitCode"] == 0
        and env["exitCode"] == 0
    )
    # A secret never names a file, and a reference to an undeclared secret is refused.
    assert [c["reason"] for c in changes(events, "refused")] == ["secret-in-argv", "unknown-secret"]
    assert not (r.workspace / VALUE).exists()
    assert (r.workspace / "ref.txt").read_text() == "${secret:API_TOKEN}"  # files get the reference, not the value
    assert len(events) > 8
    for text in (
        str(events),
        r.log(),
        (r.dir / "run-config.json").read_text(),
        (r.dir / "state").joinpath(f"{cfg.session_id}.json").read_text(),
    ):
        assert VALUE not in text


async def test_a_value_the_model_encodes_reaches_no_event(js, nats_url, tmp_path) -> None:
    """A model that knows a value (a prompt injection, say) writes it base64- or hex-encoded in its text,
    a note, an approval's detail and its summary: every run event shows the reference instead, as the
    canary would find the encoded value in a push."""
    import base64
    import binascii
    import json

    b64 = base64.b64encode(b"key=" + VALUE.encode()).decode()
    hexed = binascii.hexlify(VALUE.encode()).decode()
    steps = [
        {"say": f"I found {b64}", "tool_calls": [{"name": "note", "args": {"message": f"hex {hexed}"}}]},
        {"tool_calls": [{"name": "finish", "args": {"summary": f"done with {b64} / {hexed}"}}]},
    ]
    cfg = config(json.dumps({"steps": steps}), secrets=["API_TOKEN"])
    r = await start_runner(tmp_path, nats_url, cfg, secrets={"API_TOKEN": VALUE})
    assert await r.exit_code() == 0, r.log()
    events = await read_events(js, cfg.run_id)
    assert final_status(events)["status"] == "succeeded"
    blob = json.dumps(events)
    assert b64.rstrip("=")[6:] not in blob and hexed not in blob
    assert "${secret:API_TOKEN} (hex)" in blob

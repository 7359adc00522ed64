"""The bridge wire contract: the schema in proto/ matches the code, and what the kernel and
both reference bridges actually write validates against it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from nexus.kernel import Message, MessageKind
from nexus.kernel.bridge.protocol import (
    SHUTDOWN,
    decode_child_line,
    encode_delivery,
    json_schema,
)

jsonschema = pytest.importorskip("jsonschema")  # a dev dependency (via schemathesis)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "proto" / "bridge" / "lines.schema.json"
NODE = shutil.which("node")


def validator(direction: str):  # -> jsonschema.Draft202012Validator
    schema = json.loads(SCHEMA_FILE.read_text())
    return jsonschema.Draft202012Validator({**schema, "anyOf": [{"$ref": f"#/$defs/{direction}"}]})


def test_committed_schema_matches_the_code() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), (
        "proto/bridge/lines.schema.json is stale: uv run python -m nexus.kernel.bridge > proto/bridge/lines.schema.json"
    )


def test_what_the_kernel_writes_is_valid() -> None:
    to_child = validator("KernelToChild")
    m = Message(from_="k", to="c", kind=MessageKind.QUERY, payload={"x": [1, 2]}, trace_id="t")
    for line in (encode_delivery(m), SHUTDOWN):
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        to_child.validate(json.loads(line))


def test_invalid_lines_fail_the_schema_and_the_decoder_alike() -> None:
    from_child = validator("ChildToKernel")
    for bad in (
        {"type": "teleport", "payload": {}},
        {"type": "response", "payload": {"to": "x", "kind": "Response"}},
        {"type": "register", "payload": {"name": "no id"}},
        {"type": "message", "payload": {"from": "a", "to": "b", "kind": "Shout"}},
    ):
        assert not from_child.is_valid(bad)
        with pytest.raises(msgspec.ValidationError):
            decode_child_line(json.dumps(bad).encode())


@pytest.mark.parametrize(
    ("command", "division_by_zero"),
    [
        pytest.param([sys.executable, str(ROOT / "examples/bridges/python/example_agent.py")], "error", id="python"),
        pytest.param(
            [NODE or "node", str(ROOT / "examples/bridges/js/example_agent.js")],
            "response",
            id="js",
            marks=pytest.mark.skipif(NODE is None and not os.environ.get("CI"), reason="node not installed"),
        ),
    ],
)
def test_reference_bridges_write_valid_lines(command: list[str], division_by_zero: str) -> None:
    question = Message(from_="k", to="calc", kind=MessageKind.QUERY, payload={"operation": "mul", "a": 6, "b": 7})
    broken = Message(from_="k", to="calc", kind=MessageKind.COMMAND, payload={"operation": "div", "a": 1, "b": 0})
    stdin = encode_delivery(question) + b"not json at all\n" + encode_delivery(broken) + SHUTDOWN
    out = subprocess.run(command, input=stdin, capture_output=True, timeout=30, env={"NEXUS_AGENT_ID": "calc"})
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    from_child = validator("ChildToKernel")
    for line in lines:
        from_child.validate(line)
        decode_child_line(json.dumps(line).encode())
    assert lines[0]["type"] == "register" and lines[0]["payload"]["id"] == "calc"
    assert lines[1]["type"] == "response"
    assert lines[1]["payload"]["reply_to"] == question.id and lines[1]["payload"]["payload"]["result"] == 42
    assert b"malformed" in out.stderr  # the bad line was reported and skipped, not fatal
    # 1/0: Python raises (an error line); JavaScript answers Infinity, which JSON writes as null
    assert lines[2]["type"] == division_by_zero

"""proto/ is generated from the code; these fail when the committed files drift."""

import json
import os
import subprocess
from pathlib import Path

import msgspec
import pytest

from nexus.events.catalog import MESSAGES, STREAMS
from nexus.events.proto import render

from tests.conftest import need_tool

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"


def test_committed_proto_matches_the_code() -> None:
    files = render()
    stale = [p for p, text in files.items() if not (PROTO / p).exists() or (PROTO / p).read_text() != text]
    assert not stale, f"proto/ drifted from libs/events; run `make proto`: {stale}"
    committed = {str(p.relative_to(PROTO)) for p in (PROTO / "messages").glob("*.json")}
    assert committed == {p for p in files if p.startswith("messages/")}


def test_asyncapi_lists_every_subject_stream_and_payload() -> None:
    doc = json.loads((PROTO / "asyncapi.json").read_text())
    assert doc["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {m.subject for m in MESSAGES}
    assert set(doc["x-nexus-streams"]) == {s.name for s in STREAMS}
    for m in MESSAGES:
        assert m.payload.__name__ in doc["components"]["schemas"]


def test_run_config_schema_accepts_the_seed_example() -> None:
    from nexus.events.payloads import RunConfig

    seed = {
        "run_id": "run_123",
        "agent_id": "agent_backend_implementer",
        "task_id": "task_456",
        "system_prompt": "...",
        "skills": ["...skill markdown..."],
        "memory": ["...relevant memory..."],
        "tools": ["git", "shell", "cargo"],
        "permissions": {"can_commit": True, "can_merge": False},
    }
    cfg = msgspec.convert(seed, RunConfig)
    assert cfg.permissions.can_commit and not cfg.permissions.can_merge
    schema = json.loads((PROTO / "run-config.schema.json").read_text())
    assert set(seed) <= set(schema["$defs"]["RunConfig"]["properties"])


def test_the_official_asyncapi_parser_accepts_the_document() -> None:
    """proto/asyncapi.json parses with @asyncapi/parser (installed by scripts/install-test-tools.sh)
    with no error-level diagnostic."""
    node = need_tool("node")
    checker = ROOT / "scripts" / "asyncapi"
    if not (checker / "node_modules" / "@asyncapi" / "parser").is_dir():
        message = "the AsyncAPI parser is not installed (scripts/install-test-tools.sh runs npm ci)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = subprocess.run(
        [node, "validate.mjs", str(ROOT / "proto" / "asyncapi.json")],
        cwd=checker,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = json.loads(out.stdout.splitlines()[-1])
    assert out.returncode == 0 and summary == {"parsed": True, "errors": 0, "diagnostics": summary["diagnostics"]}, (
        out.stdout[-3000:]
    )
